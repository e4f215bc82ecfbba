variable "name" {
  description = "Replication group id and name prefix, e.g. \"kfops-dev-feast\"."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cache."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the cache subnet group."
  type        = list(string)
}

variable "allowed_security_groups" {
  description = "Security groups, by a name fixed in the configuration, allowed to connect on the Redis port (the EKS cluster/node security group). The keys must be static: a security group id is known only after apply, and for_each keys must be known at plan."
  type        = map(string)
}

variable "engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "node_type" {
  description = "Cache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "replicas" {
  description = "Read replicas besides the primary; >= 1 turns on automatic failover and Multi-AZ."
  type        = number
  default     = 0
}

variable "auth_token_generation" {
  description = "Bump to generate a new AUTH token (rotation); pods pick it up through External Secrets."
  type        = string
  default     = "1"
}

variable "snapshot_retention_days" {
  description = "Days of daily snapshots (0 disables them; the online store can be rematerialised)."
  type        = number
  default     = 1
}

variable "log_retention_days" {
  description = "Days to keep the slow log."
  type        = number
  default     = 365
}

variable "logs_kms_key_arn" {
  description = "KMS key ARN that encrypts the slow-log group."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
