"""Generation and scoring with a trained model, for every model family."""
