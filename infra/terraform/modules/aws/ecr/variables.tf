variable "name_prefix" {
  description = "Repository name prefix, e.g. \"kfops-dev\" gives kfops-dev/kfops."
  type        = string
}

variable "repositories" {
  description = "Repository names under the prefix: the images `kfops build` makes."
  type        = list(string)
  default     = ["kfops", "kfops-gpu", "kfops-serving"]
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the images at rest; null = the AWS managed ECR key."
  type        = string
  default     = null
}

variable "force_delete" {
  description = "Let terraform destroy delete repositories that still hold images (throwaway environments only)."
  type        = bool
  default     = false
}

variable "untagged_expiry_days" {
  description = "Days after which untagged images expire."
  type        = number
  default     = 14
}

variable "tags" {
  description = "Tags added to every repository."
  type        = map(string)
  default     = {}
}
