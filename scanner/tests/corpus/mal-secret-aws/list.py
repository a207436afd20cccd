import boto3
AWS_ACCESS_KEY_ID = "AKIAQ3EGRT5LMNB7XZ4W"
AWS_SECRET_ACCESS_KEY = "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"
s3 = boto3.client("s3", aws_access_key_id=AWS_ACCESS_KEY_ID, aws_secret_access_key=AWS_SECRET_ACCESS_KEY)
print(s3.list_buckets())
