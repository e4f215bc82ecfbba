output "address" {
  description = "Hostname of the PostgreSQL endpoint."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Database MLflow uses."
  value       = aws_db_instance.this.db_name
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret (JSON with username and password) that RDS manages and rotates."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "KMS key of the database and of its master secret; secret readers need kms:Decrypt on it."
  value       = module.db_key.arn
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.db.id
}
