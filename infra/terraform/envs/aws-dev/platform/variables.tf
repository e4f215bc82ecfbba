variable "infra_state_bucket" {
  description = "S3 bucket holding the state of the infra root."
  type        = string
}

variable "infra_state_key" {
  description = "State key of the infra root."
  type        = string
  default     = "kfops/aws-dev/infra.tfstate"
}

variable "infra_state_region" {
  description = "Region of the state bucket."
  type        = string
  default     = "us-east-1"
}

variable "kfp_endpoint_allowed_cidrs" {
  description = "CIDRs besides the VPC allowed to reach the internal KFP load balancer (VPN, peered networks)."
  type        = list(string)
  default     = []
}

variable "image_tag" {
  description = "Tag of the kfops images in the ECR repositories (`kfops build --push --tag`); the profile pins it."
  type        = string
  default     = "0.1.0"
}
