output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority" {
  description = "Base64 CA certificate of the Kubernetes API."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_security_group_id" {
  description = "Security group EKS attaches to the control plane and the managed nodes."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider for IRSA trust policies."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer_url" {
  description = "OIDC issuer URL of the cluster (https://...)."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "node_role_arn" {
  description = "IAM role of the worker nodes."
  value       = aws_iam_role.node.arn
}

output "gpu_node_selector" {
  description = "Node selector that puts a pod on the GPU node group."
  value       = { (var.gpu_node_label.key) = var.gpu_node_label.value }
}

output "gpu_toleration" {
  description = "Toleration (Kubernetes spelling) a pod needs to run on the tainted GPU nodes."
  value = {
    key      = var.gpu_taint.key
    operator = "Equal"
    value    = var.gpu_taint.value
    effect   = local.taint_effect_k8s[var.gpu_taint.effect]
  }
}
