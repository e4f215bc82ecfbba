variable "name_prefix" {
  description = "Bucket name prefix; must be globally unique-ish, e.g. \"kfops-dev-123456789012\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{2,40}$", var.name_prefix))
    error_message = "name_prefix must be 3-41 lowercase letters, digits or dashes (bucket names add a suffix)."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete non-empty buckets. Keep false outside throwaway environments."
  type        = bool
  default     = false
}

variable "pipeline_root_expiration_days" {
  description = "Days before intermediate pipeline artifacts (the KFP pipeline root) expire."
  type        = number
  default     = 90
}

variable "noncurrent_version_expiration_days" {
  description = "Days to keep overwritten/deleted object versions in every bucket."
  type        = number
  default     = 30
}

variable "access_log_retention_days" {
  description = "Days to keep S3 server access logs."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
