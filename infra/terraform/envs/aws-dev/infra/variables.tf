variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Environment name; prefixes every resource and is the EKS cluster name."
  type        = string
  default     = "kfops-dev"
}

variable "availability_zones" {
  description = "Zones to use (two or three), named explicitly so the subnet layout never shifts."
  type        = list(string)
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per zone (dev: cheaper)."
  type        = bool
  default     = true
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.34"
}

variable "endpoint_public_access" {
  description = "Expose the Kubernetes API publicly (restricted to public_access_cidrs)."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint."
  type        = list(string)
  default     = []
}

variable "admin_principal_arns" {
  description = "IAM principals granted cluster-admin."
  type        = list(string)
  default     = []
}

variable "cluster_log_types" {
  description = "EKS control plane logs kept in CloudWatch (audit logs are the costly ones)."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

variable "cpu_min_size" {
  description = "CPU nodes that always run (also the initial size)."
  type        = number
  default     = 2
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_max_size" {
  description = "Most GPU nodes at once (the group idles at zero)."
  type        = number
  default     = 2
}

variable "db_multi_az" {
  description = "Multi-AZ standby for the MLflow database."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the MLflow database from deletion."
  type        = bool
  default     = true
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete non-empty buckets."
  type        = bool
  default     = false
}

variable "redis_replicas" {
  description = "Redis read replicas (>= 1 enables failover)."
  type        = number
  default     = 0
}

variable "kfp_namespace" {
  description = "Namespace of Kubeflow Pipelines (the upstream manifests use kubeflow)."
  type        = string
  default     = "kubeflow"
}

variable "serving_namespace" {
  description = "Namespace of kfops InferenceServices."
  type        = string
  default     = "kfops-serving"
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
