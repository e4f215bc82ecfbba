output "role_arns" {
  description = "IRSA role ARN by workload."
  value       = { for workload, role in aws_iam_role.workload : workload => role.arn }
}

output "service_accounts" {
  description = "By workload: the Kubernetes service account (namespace, name) and the role ARN to annotate it with."
  value = {
    for workload, spec in var.workloads : workload => {
      namespace = spec.namespace
      name      = spec.service_account
      role_arn  = aws_iam_role.workload[workload].arn
    }
  }
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role of the cluster autoscaler (null when disabled)."
  value       = try(aws_iam_role.cluster_autoscaler[0].arn, null)
}
