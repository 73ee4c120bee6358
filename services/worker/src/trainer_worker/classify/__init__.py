"""Text classification, data side: collectors (arXiv, local files, the hub, the built-in
botocore dataset), preparation (cleaning, dedup, filters, stratified split, report), the
TF-IDF + logistic-regression baseline, the model registry's files and the offline A/B test."""
