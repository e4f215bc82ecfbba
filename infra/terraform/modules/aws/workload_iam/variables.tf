variable "cluster_name" {
  description = "EKS cluster name; prefixes role names and scopes the autoscaler policy."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider."
  type        = string
}

variable "oidc_issuer_url" {
  description = "OIDC issuer URL of the cluster (https://oidc.eks...)."
  type        = string
}

variable "workloads" {
  description = <<-EOT
    IRSA roles to create, keyed by workload (pipeline_runner, mlflow, kserve, feast, ...).
    Each role is trusted only by one Kubernetes service account and gets exactly the bucket,
    KMS and secret access listed here.
  EOT
  type = map(object({
    namespace         = string
    service_account   = string
    read_bucket_arns  = optional(list(string), [])
    write_bucket_arns = optional(list(string), [])
    kms_key_arns      = optional(list(string), [])
    secret_arns       = optional(list(string), [])
  }))

  validation {
    condition = alltrue([
      for workload in values(var.workloads) :
      length(concat(workload.read_bucket_arns, workload.write_bucket_arns, workload.secret_arns)) > 0
    ])
    error_message = "Every workload must be granted at least one bucket or secret; drop workloads that need nothing."
  }
}

variable "cluster_autoscaler_service_account" {
  description = "Service account of the cluster autoscaler (gets the scale-the-node-groups role). null = no role."
  type        = object({ namespace = string, name = string })
  default     = { namespace = "kube-system", name = "cluster-autoscaler" }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
