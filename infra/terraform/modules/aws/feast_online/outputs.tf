output "primary_endpoint" {
  description = "Hostname of the primary (read/write) endpoint."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "reader_endpoint" {
  description = "Hostname of the reader endpoint."
  value       = aws_elasticache_replication_group.this.reader_endpoint_address
}

output "port" {
  description = "Redis port."
  value       = local.port
}

output "tls" {
  description = "Whether clients must connect with TLS (always true here)."
  value       = aws_elasticache_replication_group.this.transit_encryption_enabled
}

output "auth_token_secret_arn" {
  description = "Secrets Manager secret holding the AUTH token (plain string)."
  value       = aws_secretsmanager_secret.auth_token.arn
}

output "kms_key_arn" {
  description = "KMS key of the cache and of the AUTH token secret; secret readers need kms:Decrypt on it."
  value       = module.cache_key.arn
}

output "security_group_id" {
  description = "Security group of the cache."
  value       = aws_security_group.cache.id
}
