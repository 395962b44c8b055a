# Installs the riskwire chart into its own namespace: the namespace, the Secret with
# the admin token and the audit key (unless an external store provides them), and the
# Helm release with the environment's values file plus what is set here. The chart
# makes the NetworkPolicies; this module points them at the right namespaces.

provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}

provider "helm" {
  kubernetes = {
    config_path    = var.kubeconfig_path
    config_context = var.kube_context
  }
}

locals {
  chart_path  = coalesce(var.chart_path, "${path.module}/../helm/riskwire")
  values_file = "${local.chart_path}/values-${var.environment}.yaml"
  secret_name = "${var.release_name}-secrets"

  labels = {
    "app.kubernetes.io/part-of"    = "riskwire"
    "app.kubernetes.io/managed-by" = "terraform"
    "riskwire.io/environment"      = var.environment
  }

  overrides = {
    image = {
      repository = var.image_repository
      tag        = var.image_tag
      digest     = var.image_digest
    }
    secrets = merge(
      { source = var.secret_source },
      var.secret_source == "existing" ? { existingSecret = local.secret_name } : {},
    )
    networkPolicy = {
      dataPlane = {
        namespaceSelector = { matchLabels = var.transaction_processor_namespace_labels }
      }
      adminPlane = {
        namespaceSelector = { matchLabels = var.operations_namespace_labels }
      }
      metrics = {
        namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.monitoring_namespace } }
      }
      egress = {
        otlp = {
          enabled           = var.otlp_endpoint != ""
          namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.otlp_namespace } }
        }
        kafka = {
          enabled = length(var.kafka_cidrs) > 0
          cidrs   = var.kafka_cidrs
          ports   = var.kafka_ports
        }
      }
    }
    telemetry = {
      otlp = { endpoint = var.otlp_endpoint }
    }
    autoscaling = merge(
      var.min_replicas == null ? {} : { minReplicas = var.min_replicas },
      var.max_replicas == null ? {} : { maxReplicas = var.max_replicas },
    )
  }
}

resource "kubernetes_namespace_v1" "riskwire" {
  metadata {
    name = var.namespace
    labels = merge(local.labels, var.namespace_labels, {
      # The gateway runs as non-root with a read-only root filesystem and no
      # capabilities: the restricted Pod Security Standard admits it.
      "pod-security.kubernetes.io/enforce" = "restricted"
    })
  }
}

resource "kubernetes_secret_v1" "riskwire" {
  count = var.secret_source == "existing" ? 1 : 0

  metadata {
    name      = local.secret_name
    namespace = kubernetes_namespace_v1.riskwire.metadata[0].name
    labels    = local.labels
  }

  type = "Opaque"

  data = {
    "admin-token" = var.admin_token
    "audit-key"   = var.audit_key
  }

  lifecycle {
    precondition {
      condition     = try(length(var.admin_token) > 0 && length(var.audit_key) >= 32, false)
      error_message = "secret_source = existing needs admin_token and audit_key (at least 32 characters)."
    }
  }
}

resource "helm_release" "riskwire" {
  name      = var.release_name
  namespace = kubernetes_namespace_v1.riskwire.metadata[0].name
  chart     = local.chart_path

  values = [
    file(local.values_file),
    yamlencode(local.overrides),
    yamlencode(var.extra_values),
  ]

  atomic          = true
  cleanup_on_fail = true
  wait            = true
  timeout         = var.helm_timeout_seconds

  depends_on = [kubernetes_secret_v1.riskwire]
}
