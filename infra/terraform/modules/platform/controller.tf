# The kfops promotion controller: MLflow sends a signed webhook when @champion moves, the controller
# rolls the new version out as a KServe canary (see docs/deployment.md). It runs in the serving
# namespace, in the slim serving image, reachable only from the MLflow pods; its service account may
# do exactly what a rollout does (kfops/adapters/kserve_cluster.py, the Lease in kfops/adapters/kube.py).

variable "controller_enabled" {
  description = "Deploy the promotion controller (MLflow webhooks -> KServe rollout)."
  type        = bool
  default     = true
}

variable "controller_image" {
  description = "Image of the controller, and of the InferenceServices it rolls out: the serving image (cluster.serving_image)."
  type        = string
  default     = "ghcr.io/kfops/kfops-serving:0.1.0"
}

variable "controller_model_name" {
  description = "Registered model whose @champion the controller serves (registry.model_name)."
  type        = string
  default     = "flights-delay"
}

variable "controller_webhook_secret_name" {
  description = "Kubernetes secret in the serving namespace holding the webhook HMAC secret under the key `secret`."
  type        = string
  default     = "kfops-controller-webhook"
}

variable "mlflow_webhook_encryption_secret_name" {
  description = "Kubernetes secret in the MLflow namespace holding MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY (a Fernet key): MLflow encrypts stored webhook secrets with it, and without a fixed one loses them on restart."
  type        = string
  default     = "mlflow-webhook-encryption"
}

variable "controller_config_env" {
  description = "Further kfops settings as KFOPS__SECTION__KEY environment variables (the serving config)."
  type        = map(string)
  default     = {}
}

locals {
  controller_name = "kfops-controller"
  controller_port = 8095
  controller_url  = "http://${local.controller_name}.${var.serving_namespace}.svc.cluster.local:${local.controller_port}/webhooks/mlflow"
  controller_labels = {
    "app.kubernetes.io/name"       = local.controller_name
    "app.kubernetes.io/part-of"    = "kfops"
    "app.kubernetes.io/managed-by" = "terraform"
  }
  controller_env = merge({
    KFOPS__REGISTRY__TRACKING_URI     = "http://mlflow.${local.mlflow_sa.namespace}.svc.cluster.local:${local.mlflow_port}"
    KFOPS__REGISTRY__MODEL_NAME       = var.controller_model_name
    KFOPS__SERVING__TARGET            = "kserve"
    KFOPS__CLUSTER__SERVING_NAMESPACE = var.serving_namespace
    KFOPS__CLUSTER__SERVING_IMAGE     = var.controller_image
  }, var.controller_config_env)
}

resource "kubernetes_service_account_v1" "controller" {
  count = var.controller_enabled ? 1 : 0

  metadata {
    name      = local.controller_name
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
    labels    = local.controller_labels
  }
  automount_service_account_token = true
}

# Exactly the calls of a rollout: read/create/patch the InferenceService, read the canary's and
# the stable revision's pod metrics through the API server's pod proxy, and hold the rollout Lease.
resource "kubernetes_role_v1" "controller" {
  count = var.controller_enabled ? 1 : 0

  metadata {
    name      = local.controller_name
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
    labels    = local.controller_labels
  }

  rule {
    api_groups = ["serving.kserve.io"]
    resources  = ["inferenceservices"]
    verbs      = ["get", "create", "patch"]
  }
  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["list"]
  }
  rule {
    api_groups = [""]
    resources  = ["pods/proxy"]
    verbs      = ["get"]
  }
  rule {
    api_groups = ["coordination.k8s.io"]
    resources  = ["leases"]
    verbs      = ["get", "create", "update"]
  }

  rule {
    api_groups = ["networking.k8s.io"]
    resources  = ["networkpolicies"]
    verbs      = ["create", "update"]
  }

  rule {
    api_groups = ["apps"]
    resources  = ["deployments"]
    verbs      = ["create", "patch"]
  }

  rule {
    api_groups = [""]
    resources  = ["services"]
    verbs      = ["create", "patch"]
  }
}

resource "kubernetes_role_binding_v1" "controller" {
  count = var.controller_enabled ? 1 : 0

  metadata {
    name      = local.controller_name
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
    labels    = local.controller_labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.controller[0].metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.controller[0].metadata[0].name
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
  }
}

resource "kubernetes_deployment_v1" "controller" {
  #checkov:skip=CKV_K8S_43:The image is the serving image variable (cluster.serving_image); pin it by digest there, as for the InferenceServices.
  #checkov:skip=CKV_K8S_35:kfops reads the HMAC secret from KFOPS_WEBHOOK_SECRET only; it never logs it and the pod runs nothing else.
  count = var.controller_enabled ? 1 : 0

  metadata {
    name      = local.controller_name
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
    labels    = local.controller_labels
  }

  spec {
    replicas = 1 # one rollout at a time anyway (the Lease); a second replica only waits
    selector {
      match_labels = { "app.kubernetes.io/name" = local.controller_name }
    }
    template {
      metadata {
        labels = local.controller_labels
      }
      spec {
        service_account_name            = kubernetes_service_account_v1.controller[0].metadata[0].name
        automount_service_account_token = true
        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "controller"
          image             = var.controller_image
          image_pull_policy = "Always"
          command           = ["kfops", "controller", "run", "--host", "0.0.0.0", "--port", tostring(local.controller_port), "--url", local.controller_url]
          port {
            name           = "http"
            container_port = local.controller_port
          }
          env {
            name = "KFOPS_WEBHOOK_SECRET"
            value_from {
              secret_key_ref {
                name = var.controller_webhook_secret_name
                key  = "secret"
              }
            }
          }
          dynamic "env" {
            for_each = local.controller_env
            content {
              name  = env.key
              value = env.value
            }
          }
          resources {
            requests = { cpu = "100m", memory = "256Mi" }
            limits   = { cpu = "500m", memory = "512Mi" }
          }
          liveness_probe {
            http_get {
              path = "/healthz"
              port = local.controller_port
            }
            period_seconds = 20
          }
          readiness_probe {
            http_get {
              path = "/healthz"
              port = local.controller_port
            }
            period_seconds = 10
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }
        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }

  depends_on = [helm_release.kserve, helm_release.mlflow]
}

resource "kubernetes_service_v1" "controller" {
  count = var.controller_enabled ? 1 : 0

  metadata {
    name      = local.controller_name
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
    labels    = local.controller_labels
  }
  spec {
    type     = "ClusterIP"
    selector = { "app.kubernetes.io/name" = local.controller_name }
    port {
      name        = "http"
      port        = local.controller_port
      target_port = local.controller_port
    }
  }
}

# Webhooks come from the MLflow tracking server's pods only; nothing else may reach the controller.
resource "kubernetes_network_policy_v1" "controller" {
  count = var.controller_enabled ? 1 : 0

  metadata {
    name      = local.controller_name
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
    labels    = local.controller_labels
  }
  spec {
    pod_selector {
      match_labels = { "app.kubernetes.io/name" = local.controller_name }
    }
    policy_types = ["Ingress"]
    ingress {
      from {
        namespace_selector {
          match_labels = { "kubernetes.io/metadata.name" = kubernetes_namespace_v1.mlflow.metadata[0].name }
        }
        pod_selector {
          match_labels = { "app.kubernetes.io/name" = "mlflow" }
        }
      }
      ports {
        port     = tostring(local.controller_port)
        protocol = "TCP"
      }
    }
  }
}

# Registers (creates or updates, idempotently) the MLflow webhook once MLflow and the controller run.
resource "kubernetes_job_v1" "controller_register_webhook" {
  count = var.controller_enabled ? 1 : 0

  metadata {
    name      = "${local.controller_name}-register-webhook"
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
    labels    = local.controller_labels
  }
  spec {
    backoff_limit              = 6
    ttl_seconds_after_finished = 3600
    template {
      metadata {
        labels = { "app.kubernetes.io/part-of" = "kfops" }
      }
      spec {
        restart_policy                  = "OnFailure"
        automount_service_account_token = false
        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "register-webhook"
          image             = var.controller_image
          image_pull_policy = "Always"
          command           = ["kfops", "controller", "register-webhook", "--url", local.controller_url]
          env {
            name = "KFOPS_WEBHOOK_SECRET"
            value_from {
              secret_key_ref {
                name = var.controller_webhook_secret_name
                key  = "secret"
              }
            }
          }
          dynamic "env" {
            for_each = local.controller_env
            content {
              name  = env.key
              value = env.value
            }
          }
          resources {
            requests = { cpu = "50m", memory = "128Mi" }
            limits   = { cpu = "500m", memory = "512Mi" }
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }
  wait_for_completion = false

  depends_on = [kubernetes_deployment_v1.controller, helm_release.mlflow]
}
