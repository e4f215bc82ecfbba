variable "identifier" {
  description = "RDS instance identifier, e.g. \"kfops-dev-mlflow\"."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more zones) for the DB subnet group."
  type        = list(string)
}

variable "allowed_security_groups" {
  description = "Security groups, by a name fixed in the configuration, allowed to connect on 5432 (the EKS cluster/node security group). The keys must be static: a security group id is known only after apply, and for_each keys must be known at plan."
  type        = map(string)
}

variable "engine_version" {
  description = "PostgreSQL major version; minor versions upgrade automatically."
  type        = string
  default     = "17"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "allocated_storage_gib" {
  description = "Initial storage; grows automatically up to max_allocated_storage_gib."
  type        = number
  default     = 20
}

variable "max_allocated_storage_gib" {
  description = "Storage autoscaling ceiling."
  type        = number
  default     = 200
}

variable "database_name" {
  description = "Database MLflow uses."
  type        = string
  default     = "mlflow"
}

variable "master_username" {
  description = "Master user name; its password is generated and rotated by RDS in Secrets Manager."
  type        = string
  default     = "mlflow_admin"
}

variable "multi_az" {
  description = "Standby replica in a second zone (about twice the cost). Turn on for production."
  type        = bool
  default     = false
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1
    error_message = "Backups must stay on: backup_retention_days >= 1."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the instance. Set false (and apply) before a teardown."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days to keep exported PostgreSQL logs."
  type        = number
  default     = 365
}

variable "logs_kms_key_arn" {
  description = "KMS key ARN that encrypts the exported log groups."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
