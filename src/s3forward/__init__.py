"""s3forward: mParticle event batches in, the Amazon S3 Event integration's files out."""

__version__ = "0.1.0"
