output "kfp_endpoint" {
  description = "URL of the KFP API/UI load balancer, for kfp.Client(host=...)."
  value = format("http://%s", coalesce(
    kubernetes_service_v1.kfp_endpoint.status[0].load_balancer[0].ingress[0].hostname,
    kubernetes_service_v1.kfp_endpoint.status[0].load_balancer[0].ingress[0].ip,
  ))
}

output "kfp_namespace" {
  description = "Namespace KFP runs pipelines in."
  value       = local.kfp_namespace
}

output "mlflow_tracking_uri" {
  description = "In-cluster MLflow tracking URI (pipeline pods and KServe use it; port-forward from a laptop)."
  value       = "http://mlflow.${kubernetes_namespace_v1.mlflow.metadata[0].name}.svc.cluster.local:${local.mlflow_port}"
}

output "serving_namespace" {
  description = "Namespace of kfops InferenceServices."
  value       = kubernetes_namespace_v1.serving.metadata[0].name
}

output "redis_auth_secret" {
  description = "Kubernetes Secret (KFP and serving namespaces): key `password` = AUTH token, key `connection_string` = full Feast connection string."
  value = {
    name                  = local.redis_auth_k8s_name
    password_key          = "password"
    connection_string_key = "connection_string"
  }
}

output "versions" {
  description = "Pinned versions of what this module installed."
  value = {
    kubeflow_pipelines   = var.kfp_version
    cert_manager         = var.cert_manager_chart_version
    nvidia_device_plugin = var.nvidia_device_plugin_chart_version
    kserve               = var.kserve_chart_version
    kserve_mode          = local.kserve_deployment_mode
    knative_operator     = var.knative_operator_version
    knative_serving      = var.knative_serving_version
    kubeflow_trainer     = var.trainer_chart_version
    mlflow_chart         = var.mlflow_chart_version
    external_secrets     = var.external_secrets_chart_version
    cluster_autoscaler   = var.cluster_autoscaler_values == null ? null : var.cluster_autoscaler_chart_version
  }
}
