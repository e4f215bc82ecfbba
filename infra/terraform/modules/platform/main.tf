# Cloud-neutral platform on an existing Kubernetes cluster: cert-manager, NVIDIA device plugin,
# cluster autoscaler (optional), External Secrets, Kubeflow Pipelines (kustomize), Kubeflow
# Trainer, Knative Serving with Kourier, KServe (Knative deployment mode, so canaries split
# traffic between revisions) and the MLflow tracking server.
# Every chart and manifest version is pinned in variables.tf.

locals {
  kfp_namespace = "kubeflow" # fixed by the upstream KFP manifests
  # KServe v0.20 names: Knative (was Serverless) and Standard (was RawDeployment). kfops renders
  # canaryTrafficPercent, which only Knative revisions honour; tests/infra cross-checks both sides.
  kserve_deployment_mode = "Knative"
  # The ClusterTrainingRuntime kfops TrainJobs reference (kfops.adapters.trainjob.DEFAULT_RUNTIME).
  trainer_runtime = "torch-distributed"
  # kfp-launcher is created by the upstream manifests (base/pipeline/kfp-launcher-configmap.yaml);
  # patching it here keeps one owner instead of a second resource that fights over it.
  kfp_launcher_data = merge(
    { defaultPipelineRoot = var.pipeline_root },
    var.kfp_object_store_providers == null ? {} : { providers = yamlencode(var.kfp_object_store_providers) },
  )
  kfp_manifests       = "github.com/kubeflow/pipelines/manifests/kustomize"
  mlflow_sa           = var.service_accounts["mlflow"]
  kserve_sa           = var.service_accounts["kserve"]
  log_sink_sa         = var.service_accounts["log_sink"]
  feast_sa            = var.service_accounts["feast"]
  eso_sa              = var.service_accounts["external_secrets"]
  pipeline_sa         = var.service_accounts["pipeline_runner"]
  mlflow_port         = 5000
  redis_auth_k8s_name = "feast-redis-auth"
  mlflow_db_k8s_name  = "mlflow-db"
  # Feast's Redis connection string without the password (host:port,ssl=true).
  redis_connection_base = "${var.redis_endpoint.host}:${var.redis_endpoint.port},ssl=${var.redis_endpoint.tls}"
}

# --- Storage ------------------------------------------------------------------------------------

resource "kubernetes_storage_class_v1" "default" {
  count = var.default_storage_class == null ? 0 : 1

  metadata {
    name = var.default_storage_class.name
    annotations = {
      "storageclass.kubernetes.io/is-default-class" = "true"
    }
  }
  storage_provisioner    = var.default_storage_class.provisioner
  parameters             = var.default_storage_class.parameters
  reclaim_policy         = "Delete"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
}

# --- Cluster add-ons ----------------------------------------------------------------------------

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = var.cert_manager_chart_version
  namespace        = "cert-manager"
  create_namespace = true
  wait             = true

  values = [yamlencode({
    crds = { enabled = true }
  })]
}

resource "helm_release" "nvidia_device_plugin" {
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = var.nvidia_device_plugin_chart_version
  namespace        = "nvidia-device-plugin"
  create_namespace = true

  # Only on GPU nodes; the chart's default affinity expects node-feature-discovery labels.
  values = [yamlencode({
    nodeSelector = var.gpu_node_selector
    tolerations  = [var.gpu_toleration]
    affinity     = null
  })]
}

resource "helm_release" "cluster_autoscaler" {
  count = var.cluster_autoscaler_values == null ? 0 : 1

  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_chart_version
  namespace  = "kube-system"

  values = [yamlencode(var.cluster_autoscaler_values)]
}

resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = "https://charts.external-secrets.io"
  chart            = "external-secrets"
  version          = var.external_secrets_chart_version
  namespace        = local.eso_sa.namespace
  create_namespace = true
  wait             = true

  values = [yamlencode({
    installCRDs = true
    serviceAccount = {
      create      = true
      name        = local.eso_sa.name
      annotations = local.eso_sa.annotations
    }
  })]
}

# --- Kubeflow Pipelines (standalone, upstream kustomize manifests at a pinned tag) ---------------

data "kustomization_overlay" "kfp_cluster_scoped" {
  resources = ["${local.kfp_manifests}/cluster-scoped-resources?ref=${var.kfp_version}"]
}

resource "kustomization_resource" "kfp_cluster_scoped" {
  for_each = data.kustomization_overlay.kfp_cluster_scoped.ids

  manifest = data.kustomization_overlay.kfp_cluster_scoped.manifests[each.value]
}

data "kustomization_overlay" "kfp" {
  resources = ["${local.kfp_manifests}/env/platform-agnostic?ref=${var.kfp_version}"]

  # Task pods write artifacts under the cloud pipeline root with their own (IRSA/WI) identity.
  patches {
    target {
      kind = "ConfigMap"
      name = "kfp-launcher"
    }
    patch = yamlencode({
      apiVersion = "v1"
      kind       = "ConfigMap"
      metadata   = { name = "kfp-launcher" }
      data       = local.kfp_launcher_data
    })
  }

  patches {
    target {
      kind = "ConfigMap"
      name = "pipeline-install-config"
    }
    patch = yamlencode({
      apiVersion = "v1"
      kind       = "ConfigMap"
      metadata   = { name = "pipeline-install-config" }
      data       = { defaultPipelineRoot = var.pipeline_root }
    })
  }
}

# ids_prio: 0 = namespaces and CRDs, 1 = everything else, 2 = webhooks.
resource "kustomization_resource" "kfp_p0" {
  for_each = data.kustomization_overlay.kfp.ids_prio[0]

  manifest   = data.kustomization_overlay.kfp.manifests[each.value]
  depends_on = [kustomization_resource.kfp_cluster_scoped, kubernetes_storage_class_v1.default]
}

resource "kustomization_resource" "kfp_p1" {
  for_each = data.kustomization_overlay.kfp.ids_prio[1]

  manifest   = data.kustomization_overlay.kfp.manifests[each.value]
  depends_on = [kustomization_resource.kfp_p0]
}

resource "kustomization_resource" "kfp_p2" {
  for_each = data.kustomization_overlay.kfp.ids_prio[2]

  manifest   = data.kustomization_overlay.kfp.manifests[each.value]
  depends_on = [kustomization_resource.kfp_p1]
}

# The upstream manifests create pipeline-runner; bind it to the cloud identity.
resource "kubernetes_annotations" "pipeline_runner" {
  api_version = "v1"
  kind        = "ServiceAccount"
  force       = true

  metadata {
    name      = local.pipeline_sa.name
    namespace = local.pipeline_sa.namespace
  }

  annotations = local.pipeline_sa.annotations

  depends_on = [kustomization_resource.kfp_p1]
}

resource "kubernetes_service_account_v1" "feast" {
  metadata {
    name        = local.feast_sa.name
    namespace   = local.feast_sa.namespace
    annotations = local.feast_sa.annotations
  }

  depends_on = [kustomization_resource.kfp_p0]
}

# One endpoint for the kfp client (UI + API proxy); internal-only by the env's annotations.
resource "kubernetes_service_v1" "kfp_endpoint" {
  metadata {
    name        = "kfops-kfp-endpoint"
    namespace   = local.kfp_namespace
    annotations = var.kfp_endpoint_service_annotations
  }

  spec {
    type                        = "LoadBalancer"
    selector                    = { app = "ml-pipeline-ui" }
    load_balancer_source_ranges = var.kfp_endpoint_allowed_cidrs

    port {
      name        = "http"
      port        = 80
      target_port = 3000
    }
  }

  wait_for_load_balancer = true

  depends_on = [kustomization_resource.kfp_p1]
}

# --- Kubeflow Trainer ---------------------------------------------------------------------------

resource "helm_release" "kubeflow_trainer" {
  name             = "kubeflow-trainer"
  repository       = "oci://ghcr.io/kubeflow/charts"
  chart            = "kubeflow-trainer"
  version          = var.trainer_chart_version
  namespace        = "kubeflow-system"
  create_namespace = true
  wait             = true

  # Only the runtime kfops uses; the chart names it after files/runtimes/<name>.yaml.
  values = [yamlencode({
    runtimes = { torchDistributed = { enabled = true } }
  })]
}

# --- Knative Serving + Kourier (KServe's Knative mode needs them) ----------------------------------

# The operator chart is published as a release asset of knative/operator, as KServe's install uses it.
resource "helm_release" "knative_operator" {
  name             = "knative-operator"
  chart            = "https://github.com/knative/operator/releases/download/knative-${var.knative_operator_version}/knative-operator-${var.knative_operator_version}.tgz"
  namespace        = "knative-operator"
  create_namespace = true
  wait             = true
}

resource "helm_release" "knative_serving" {
  name      = "knative-serving"
  chart     = "${path.module}/charts/knative-serving"
  namespace = "knative-operator"
  wait      = true

  values = [yamlencode({
    version = var.knative_serving_version
  })]

  depends_on = [helm_release.knative_operator]
}

# --- KServe (Knative mode: each InferenceService version is a Knative revision) ------------------

resource "helm_release" "kserve_crd" {
  name             = "kserve-crd"
  repository       = "oci://ghcr.io/kserve/charts"
  chart            = "kserve-crd"
  version          = var.kserve_chart_version
  namespace        = "kserve"
  create_namespace = true
}

# Since KServe 0.17 the controller chart is published as kserve-resources (no chart named kserve).
resource "helm_release" "kserve" {
  name       = "kserve"
  repository = "oci://ghcr.io/kserve/charts"
  chart      = "kserve-resources"
  version    = var.kserve_chart_version
  namespace  = "kserve"
  wait       = true

  values = [yamlencode({
    kserve = {
      controller = {
        deploymentMode = local.kserve_deployment_mode
        gateway = {
          # Kourier, not Istio: KServe must not create Istio VirtualServices.
          disableIstioVirtualHost = true
        }
      }
    }
  })]

  depends_on = [helm_release.kserve_crd, helm_release.cert_manager, helm_release.knative_serving]
}

resource "kubernetes_namespace_v1" "serving" {
  metadata {
    name = var.serving_namespace
  }
}

resource "kubernetes_service_account_v1" "kserve" {
  metadata {
    name        = local.kserve_sa.name
    namespace   = local.kserve_sa.namespace
    annotations = local.kserve_sa.annotations
  }

  depends_on = [kubernetes_namespace_v1.serving]
}

# kfops' inference-log sink (serving.kserve.log_sink) runs as this account: it writes the log's
# bucket, which the predictors' account cannot.
resource "kubernetes_service_account_v1" "log_sink" {
  metadata {
    name        = local.log_sink_sa.name
    namespace   = local.log_sink_sa.namespace
    annotations = local.log_sink_sa.annotations
  }
  automount_service_account_token = false

  depends_on = [kubernetes_namespace_v1.serving]
}

# --- RBAC of the pipeline's pods (the upstream pipeline-runner Role grants neither API group) ----

# The train step submits a TrainJob for multi-node torch and follows it (kfops.adapters.trainjob).
resource "kubernetes_role_v1" "kfops_trainjobs" {
  metadata {
    name      = "kfops-trainjobs"
    namespace = local.kfp_namespace
  }

  rule {
    api_groups = ["trainer.kubeflow.org"]
    resources  = ["trainjobs"]
    verbs      = ["get", "list", "watch", "create", "delete"]
  }

  depends_on = [kustomization_resource.kfp_p0]
}

resource "kubernetes_role_binding_v1" "kfops_trainjobs" {
  metadata {
    name      = "kfops-trainjobs"
    namespace = local.kfp_namespace
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.kfops_trainjobs.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = local.pipeline_sa.name
    namespace = local.pipeline_sa.namespace
  }
}

# The deploy step (and the promotion controller) create, patch and watch InferenceServices, and
# read each revision's /metrics through the pods' proxy (kfops.adapters.kserve_cluster).
resource "kubernetes_role_v1" "kfops_deployer" {
  metadata {
    name      = "kfops-deployer"
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
  }

  rule {
    api_groups = ["serving.kserve.io"]
    resources  = ["inferenceservices"]
    verbs      = ["get", "list", "watch", "create", "patch", "update"]
  }

  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["get", "list", "watch"]
  }

  rule {
    api_groups = [""]
    resources  = ["pods/proxy"]
    verbs      = ["get"]
  }

  # The NetworkPolicy deploy applies beside each InferenceService (who may reach the predictor).
  rule {
    api_groups = ["networking.k8s.io"]
    resources  = ["networkpolicies"]
    verbs      = ["create", "update"]
  }

  # serving.kserve.log_sink: the sink's Deployment and Service beside the InferenceService.
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

resource "kubernetes_role_binding_v1" "kfops_deployer" {
  metadata {
    name      = "kfops-deployer"
    namespace = kubernetes_namespace_v1.serving.metadata[0].name
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.kfops_deployer.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = local.pipeline_sa.name
    namespace = local.pipeline_sa.namespace
  }
}

# --- Secrets from the cloud secret manager ------------------------------------------------------

resource "kubernetes_namespace_v1" "mlflow" {
  metadata {
    name = local.mlflow_sa.namespace
  }
}

resource "helm_release" "kfops_secrets" {
  name      = "kfops-secrets"
  chart     = "${path.module}/charts/kfops-secrets"
  namespace = local.eso_sa.namespace

  values = [yamlencode({
    storeName = "kfops"
    provider  = var.secret_store_provider
    externalSecrets = concat(
      [{
        name      = local.mlflow_db_k8s_name
        namespace = kubernetes_namespace_v1.mlflow.metadata[0].name
        data = [
          { secretKey = "username", remoteRef = { key = var.mlflow_database.secret_remote_key, property = "username" } },
          { secretKey = "password", remoteRef = { key = var.mlflow_database.secret_remote_key, property = "password" } },
        ]
      }],
      # password, plus the full Feast connection string, to be set as KFOPS__FEATURES__REDIS_CONNECTION.
      [for namespace in distinct([local.kfp_namespace, var.serving_namespace]) : {
        name      = local.redis_auth_k8s_name
        namespace = namespace
        data      = [{ secretKey = "password", remoteRef = { key = var.redis_auth_secret_remote_key } }]
        template = {
          engineVersion = "v2"
          data = {
            password          = "{{ .password }}"
            connection_string = "${local.redis_connection_base},password={{ .password }}"
          }
        }
      }],
    )
  })]

  depends_on = [
    helm_release.external_secrets,
    kustomization_resource.kfp_p0,
    kubernetes_namespace_v1.serving,
  ]
}

# --- MLflow tracking server (PostgreSQL backend, object-store artifacts) -------------------------

resource "helm_release" "mlflow" {
  name       = "mlflow"
  repository = "https://community-charts.github.io/helm-charts"
  chart      = "mlflow"
  version    = var.mlflow_chart_version
  namespace  = kubernetes_namespace_v1.mlflow.metadata[0].name
  wait       = true

  values = [yamlencode({
    fullnameOverride = "mlflow"
    serviceAccount = {
      create      = true
      name        = local.mlflow_sa.name
      annotations = local.mlflow_sa.annotations
    }
    service = { port = local.mlflow_port }
    backendStore = {
      databaseMigration       = true
      databaseConnectionCheck = true
      postgres = {
        enabled  = true
        host     = var.mlflow_database.host
        port     = var.mlflow_database.port
        database = var.mlflow_database.name
        driver   = "psycopg2"
      }
      existingDatabaseSecret = {
        name        = local.mlflow_db_k8s_name
        usernameKey = "username"
        passwordKey = "password"
      }
    }
    artifactRoot = {
      proxiedArtifactStorage = false
      defaultArtifactRoot    = var.mlflow_artifact_root
    }
    # Registry webhooks to the promotion controller (controller.tf): an in-cluster http:// URL on a
    # private address, which MLflow refuses by default; the encryption key of stored webhook secrets.
    extraEnvVars = {
      MLFLOW_WEBHOOK_ALLOWED_SCHEMES   = "http,https"
      MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS = "true"
    }
    extraSecretNamesForEnvFrom = var.controller_enabled ? [var.mlflow_webhook_encryption_secret_name] : []
  })]

  depends_on = [helm_release.kfops_secrets]
}
