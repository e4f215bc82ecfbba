output "bucket_names" {
  description = "Bucket names by purpose: pipeline_root, data, feast_offline, mlflow_artifacts."
  value       = { for purpose, bucket in aws_s3_bucket.this : purpose => bucket.id }
}

output "bucket_arns" {
  description = "Bucket ARNs by purpose, for IAM policies."
  value       = { for purpose, bucket in aws_s3_bucket.this : purpose => bucket.arn }
}

output "kms_key_arn" {
  description = "KMS key that encrypts the buckets; readers and writers need kms:Decrypt / kms:GenerateDataKey on it."
  value       = module.buckets_key.arn
}

output "access_logs_bucket" {
  description = "Bucket receiving S3 server access logs."
  value       = aws_s3_bucket.access_logs.id
}
