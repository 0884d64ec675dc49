"""Storage URIs (local, file://, s3://), image decoding with a pixel limit, and sample shards."""
