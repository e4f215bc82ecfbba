variable "alias" {
  description = "Key alias without the alias/ prefix, e.g. \"kfops-dev-s3\"."
  type        = string
}

variable "description" {
  description = "What the key encrypts."
  type        = string
}

variable "logs_service_region" {
  description = "Let CloudWatch Logs in this region use the key for this account's log groups; null = no."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to the key."
  type        = map(string)
  default     = {}
}
