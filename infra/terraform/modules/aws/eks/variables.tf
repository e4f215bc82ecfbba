variable "cluster_name" {
  description = "EKS cluster name."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and node groups, e.g. \"1.34\"."
  type        = string
  default     = "1.34"
}

variable "vpc_id" {
  description = "VPC the cluster runs in."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the control plane ENIs and the node groups."
  type        = list(string)
}

variable "endpoint_public_access" {
  description = "Expose the Kubernetes API publicly (restricted to public_access_cidrs). false = private endpoint only."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint when endpoint_public_access is true."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "Do not open the Kubernetes API to 0.0.0.0/0; list the office/VPN CIDRs instead."
  }

  # An empty list would let EKS fall back to 0.0.0.0/0.
  validation {
    condition     = !var.endpoint_public_access || length(var.public_access_cidrs) > 0
    error_message = "endpoint_public_access = true needs public_access_cidrs (the office/VPN CIDRs)."
  }
}

variable "cluster_log_types" {
  description = "Control plane logs sent to CloudWatch."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

variable "log_retention_days" {
  description = "Days to keep control plane logs."
  type        = number
  default     = 365
}

variable "logs_kms_key_arn" {
  description = "KMS key ARN that encrypts the control plane log group."
  type        = string
}

variable "admin_principal_arns" {
  description = "IAM role/user ARNs granted cluster-admin through EKS access entries (the creator is added too)."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "cpu_min_size" {
  description = "Minimum CPU nodes."
  type        = number
  default     = 2
}

variable "cpu_desired_size" {
  description = "CPU nodes at creation; the cluster autoscaler owns it afterwards."
  type        = number
  default     = 2
}

variable "cpu_max_size" {
  description = "Maximum CPU nodes."
  type        = number
  default     = 6
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (one NVIDIA GPU each by default)."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_max_size" {
  description = "Maximum GPU nodes. The group scales from zero: no GPU node runs (or bills) until a pod asks for one."
  type        = number
  default     = 2
}

variable "gpus_per_node" {
  description = "GPUs on one node of gpu_instance_types; the cluster autoscaler needs it to scale up from zero."
  type        = number
  default     = 1
}

variable "node_disk_size_gib" {
  description = "Root volume size of every node (images with CUDA are large)."
  type        = number
  default     = 100
}

variable "gpu_node_label" {
  description = "Label key/value that marks GPU nodes; pipelines select on it."
  type        = object({ key = string, value = string })
  default     = { key = "kfops.io/node-pool", value = "gpu" }
}

variable "gpu_taint" {
  description = "Taint on GPU nodes so only pods that tolerate it land there."
  type        = object({ key = string, value = string, effect = string })
  default     = { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
