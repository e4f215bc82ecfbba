# Cloud-neutral inputs: everything cloud-specific (IAM annotations, secret store provider,
# object-store settings, load balancer annotations, storage class) is passed in by the env root.

variable "service_accounts" {
  description = <<-EOT
    Kubernetes service accounts of the kfops workloads, keyed by workload: pipeline_runner, mlflow,
    kserve, log_sink, feast, external_secrets. annotations carry the cloud identity binding
    (eks.amazonaws.com/role-arn on EKS, iam.gke.io/gcp-service-account on GKE).
  EOT
  type = map(object({
    namespace   = string
    name        = string
    annotations = map(string)
  }))

  validation {
    condition = alltrue([
      for workload in ["pipeline_runner", "mlflow", "kserve", "log_sink", "feast", "external_secrets"] :
      contains(keys(var.service_accounts), workload)
    ])
    error_message = "service_accounts needs pipeline_runner, mlflow, kserve, log_sink, feast and external_secrets."
  }
}

variable "gpu_node_selector" {
  description = "Node selector of the GPU node pool (the NVIDIA device plugin runs there only)."
  type        = map(string)
}

variable "gpu_toleration" {
  description = "Toleration of the GPU node pool's taint, Kubernetes spelling (effect NoSchedule)."
  type        = object({ key = string, operator = string, value = string, effect = string })
}

variable "pipeline_root" {
  description = "Default KFP pipeline root, e.g. s3://bucket/pipeline-root or gs://bucket/pipeline-root."
  type        = string
}

variable "kfp_object_store_providers" {
  description = "`providers` block of the kfp-launcher ConfigMap (object-store endpoint and credentials); null = launcher defaults."
  type        = any
  default     = null
}

variable "kfp_endpoint_service_annotations" {
  description = "Annotations of the LoadBalancer Service in front of the KFP API/UI (internal LB on the cloud)."
  type        = map(string)
  default     = {}
}

variable "kfp_endpoint_allowed_cidrs" {
  description = "CIDRs allowed to reach the KFP endpoint load balancer."
  type        = list(string)
}

variable "mlflow_database" {
  description = "PostgreSQL backend of MLflow; credentials come from secret_remote_key (JSON with username and password) in the cloud secret manager."
  type = object({
    host              = string
    port              = number
    name              = string
    secret_remote_key = string
  })
}

variable "mlflow_artifact_root" {
  description = "Default artifact root of MLflow experiments, e.g. s3://bucket/ (clients write there directly)."
  type        = string
}

variable "redis_auth_secret_remote_key" {
  description = "Cloud secret holding the Redis AUTH token (plain string)."
  type        = string
}

variable "redis_endpoint" {
  description = "Feast online store endpoint; with the AUTH token it makes the connection_string key of Secret feast-redis-auth."
  type        = object({ host = string, port = number, tls = bool })
}

variable "secret_store_provider" {
  description = "`spec.provider` of the External Secrets ClusterSecretStore, e.g. {aws = {service = \"SecretsManager\", region = \"us-east-1\"}}."
  type        = any
}

variable "serving_namespace" {
  description = "Namespace of the KServe InferenceServices that kfops deploys."
  type        = string
  default     = "kfops-serving"
}

variable "default_storage_class" {
  description = "Default StorageClass to create (KFP's MySQL and artifact store need PVCs); null = keep the cluster's."
  type = object({
    name        = string
    provisioner = string
    parameters  = map(string)
  })
  default = null
}

variable "cluster_autoscaler_values" {
  description = "Helm values of the cluster autoscaler (cloud provider, discovery, service account); null = not installed (GKE autoscales itself)."
  type        = any
  default     = null
}

# --- Pinned versions: bump deliberately, one at a time, and re-run the platform apply. ---

variable "kfp_version" {
  description = "Kubeflow Pipelines release (git tag of kubeflow/pipelines manifests); match the kfp SDK minor (SDK patch releases have no manifests tag)."
  type        = string
  default     = "2.17.0"
}

variable "cert_manager_chart_version" {
  description = "cert-manager Helm chart version."
  type        = string
  default     = "v1.18.2"
}

variable "nvidia_device_plugin_chart_version" {
  description = "NVIDIA k8s-device-plugin Helm chart version."
  type        = string
  default     = "0.17.1"
}

variable "kserve_chart_version" {
  description = "KServe Helm chart version (kserve-crd and kserve-resources)."
  type        = string
  default     = "v0.20.0"
}

variable "trainer_chart_version" {
  description = "Kubeflow Trainer Helm chart version."
  type        = string
  default     = "2.3.0"
}

variable "mlflow_chart_version" {
  description = "community-charts/mlflow Helm chart version."
  type        = string
  default     = "1.11.5"
}

variable "external_secrets_chart_version" {
  description = "External Secrets Operator Helm chart version."
  type        = string
  default     = "0.18.2"
}

variable "cluster_autoscaler_chart_version" {
  description = "kubernetes/autoscaler cluster-autoscaler Helm chart version; its appVersion must match the EKS minor (9.52.1 ships 1.34.1)."
  type        = string
  default     = "9.52.1"
}

variable "knative_operator_version" {
  description = "knative/operator release (its Helm chart is a release asset), as KServe's Knative-mode install pins it."
  type        = string
  default     = "v1.21.1"
}

variable "knative_serving_version" {
  description = "Knative Serving version the operator installs (KnativeServing spec.version)."
  type        = string
  default     = "1.21.1"
}
