"""The built-in dataset: the API documentation that ships inside the installed `botocore`
package (`botocore/data/<service>/<date>/service-2.json[.gz]`), one row per documented
operation or shape, labelled by its AWS service. Every chosen service's names are masked as
`[SERVICE]` in every row, so a classifier has to learn each service's vocabulary (buckets,
instances, clusters...) instead of spotting its name. No network: the text is on disk.

botocore is only read as data here (never imported), so no AWS code runs.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from platform_core.errors import AppError, ErrorCode
from trainer_worker.classify.cleaning import clean_text
from trainer_worker.classify.records import LabelledText

# 15 services from different corners of AWS, each with 100+ documented operations and
# shapes; their names (besides those in the model file's metadata) as the docs write them
SERVICES: Final[dict[str, tuple[str, ...]]] = {
    "apigateway": ("API Gateway", "APIGateway"),
    "backup": ("AWS Backup",),
    "cloudfront": ("CloudFront",),
    "dynamodb": ("DynamoDB",),
    "ec2": ("EC2", "Elastic Compute Cloud"),
    "glue": ("AWS Glue", "Glue"),
    "guardduty": ("GuardDuty",),
    "iam": ("IAM", "Identity and Access Management"),
    "kms": ("KMS", "Key Management Service"),
    "lambda": ("AWS Lambda", "Lambda"),
    "logs": ("CloudWatch Logs", "CloudWatch"),
    "rds": ("RDS", "Relational Database Service"),
    "redshift": ("Redshift",),
    "s3": ("S3", "Simple Storage Service"),
    "sagemaker": ("SageMaker",),
}
MASK: Final = "[SERVICE]"
# shorter documentation is a field name restated ("The ID of the resource.")
MIN_DOC_CHARS: Final = 60


def source_description() -> str:
    return f"builtin:botocore {botocore_version()}"


def botocore_version() -> str:
    try:
        return importlib.metadata.version("botocore")
    except importlib.metadata.PackageNotFoundError as exc:
        raise _missing() from exc


def botocore_rows(max_per_class: int) -> Iterator[LabelledText]:
    """Up to `max_per_class` rows per service, the same ones on every call (chosen by the
    hash of their id, so no seed is needed and the choice does not favour any name)."""
    data = _data_dir()
    models = {service: _load_model(data, service) for service in SERVICES}
    mask = _mask_pattern(models)
    for service, model in models.items():
        rows = [
            LabelledText(text=mask.sub(MASK, text), label=service, id=f"{service}:{name}")
            for name, text in _documented(model)
        ]
        rows.sort(key=lambda row: hashlib.sha256((row.id or "").encode()).hexdigest())
        yield from rows[:max_per_class]


def _data_dir() -> Path:
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.submodule_search_locations:
        raise _missing()
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _missing() -> AppError:
    return AppError(
        ErrorCode.DATA_NOT_FOUND,
        "the built-in dataset reads the installed botocore package, which is not installed "
        "(bash scripts/bootstrap.sh installs it)",
    )


def _load_model(data: Path, service: str) -> dict[str, object]:
    """The newest API version's service model of `service`."""
    versions = sorted(path for path in (data / service).glob("*") if path.is_dir())
    for folder in reversed(versions):
        for name in ("service-2.json.gz", "service-2.json"):
            path = folder / name
            if path.is_file():
                raw = path.read_bytes()
                loaded: object = json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)
                if isinstance(loaded, dict):
                    return loaded
    raise AppError(
        ErrorCode.DATA_NOT_FOUND, f"botocore {botocore_version()} has no model for {service}"
    )


def _documented(model: dict[str, object]) -> Iterator[tuple[str, str]]:
    """(operation or shape name, cleaned documentation) for each documented one."""
    for section in ("operations", "shapes"):
        entries = model.get(section)
        if not isinstance(entries, dict):
            continue
        for name, entry in sorted(entries.items()):
            doc = entry.get("documentation") if isinstance(entry, dict) else None
            if isinstance(doc, str):
                text = clean_text(doc)
                if len(text) >= MIN_DOC_CHARS:
                    yield f"{section}.{name}", text


def _mask_pattern(models: dict[str, dict[str, object]]) -> re.Pattern[str]:
    """Every chosen service's names as one pattern, longest first so "Amazon S3" is masked
    whole before "S3"."""
    names: set[str] = set()
    for service, model in models.items():
        names.update(SERVICES[service])
        metadata = model.get("metadata")
        if isinstance(metadata, dict):
            for key in ("serviceFullName", "serviceAbbreviation", "serviceId"):
                value = metadata.get(key)
                if isinstance(value, str) and value:
                    names.add(value)
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:Amazon |AWS )?(?:{alternatives})(?!\w)", re.IGNORECASE)
