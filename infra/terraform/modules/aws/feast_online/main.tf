# ElastiCache Redis replication group for the Feast online store: TLS in transit, KMS at rest,
# AUTH token generated here and kept in Secrets Manager (pods read it through External Secrets).

locals {
  port = 6379
}

module "cache_key" {
  source = "../kms_key"

  alias       = "${var.name}-elasticache"
  description = "${var.name}: ElastiCache at-rest encryption and AUTH token secret"
  tags        = var.tags
}

# ElastiCache AUTH tokens take 16-128 printable characters. Letters and digits only (64 of them,
# ~380 bits) so the token survives Redis URLs, Feast connection strings and YAML unescaped.
resource "random_password" "auth_token" {
  # Changing auth_token_generation makes a new token; ROTATE keeps the old one valid meanwhile.
  keepers = {
    generation = var.auth_token_generation
  }
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "auth_token" {
  #checkov:skip=CKV2_AWS_57:Rotating an ElastiCache AUTH token needs the ROTATE/SET sequence on the replication group; done by bumping var.auth_token_generation and applying, not by a Lambda.
  name                    = "${var.name}/redis-auth-token"
  description             = "AUTH token of the ${var.name} Redis replication group (Feast online store)"
  kms_key_id              = module.cache_key.arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "auth_token" {
  secret_id     = aws_secretsmanager_secret.auth_token.id
  secret_string = random_password.auth_token.result
}

resource "aws_elasticache_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.private_subnet_ids
  tags       = var.tags
}

resource "aws_security_group" "cache" {
  name        = "${var.name}-redis"
  description = "Redis for the Feast online store: reachable from the EKS cluster only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-redis" })
}

resource "aws_vpc_security_group_ingress_rule" "from_cluster" {
  for_each = var.allowed_security_groups

  security_group_id            = aws_security_group.cache.id
  description                  = "Redis from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = each.value
}

resource "aws_cloudwatch_log_group" "slow_log" {
  name              = "/aws/elasticache/${var.name}/slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50:Dev default is one node (replicas = 0) to halve cost; replicas >= 1 turns on Multi-AZ failover. The online store can be rematerialised from the offline store.
  replication_group_id = var.name
  description          = "Feast online store for kfops"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = local.port
  num_cache_clusters   = 1 + var.replicas

  automatic_failover_enabled = var.replicas > 0
  multi_az_enabled           = var.replicas > 0

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.cache.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = module.cache_key.arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.auth_token.result
  auth_token_update_strategy = "ROTATE"

  snapshot_retention_limit   = var.snapshot_retention_days
  snapshot_window            = "02:00-03:00"
  maintenance_window         = "sun:05:30-sun:06:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.slow_log.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = var.tags
}
