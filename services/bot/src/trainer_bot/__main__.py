"""`python -m trainer_bot`: the bot, in console mode when no DISCORD_TOKEN is set."""

from trainer_bot.bot import main

if __name__ == "__main__":
    raise SystemExit(main())
