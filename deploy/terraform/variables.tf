variable "environment" {
  description = "Environment name: dev, staging or production. Picks the chart's values-<environment>.yaml."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "production"], var.environment)
    error_message = "environment must be dev, staging or production."
  }
}

variable "kubeconfig_path" {
  description = "Path of the kubeconfig file the kubernetes and helm providers use."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "kubeconfig context of the target cluster; null: the file's current context."
  type        = string
  default     = null
}

variable "namespace" {
  description = "Namespace the gateway runs in; made by this module."
  type        = string
}

variable "namespace_labels" {
  description = "Extra labels of the namespace (e.g. pod-security.kubernetes.io/enforce)."
  type        = map(string)
  default     = {}
}

variable "release_name" {
  description = "Helm release name."
  type        = string
  default     = "riskwire"
}

variable "chart_path" {
  description = "Path of the riskwire chart; null: deploy/helm/riskwire of this repository."
  type        = string
  default     = null
}

variable "image_repository" {
  description = "Image repository of the gateway (built from deploy/Dockerfile)."
  type        = string
}

variable "image_tag" {
  description = "Image tag; empty: the chart's appVersion."
  type        = string
  default     = ""
}

variable "image_digest" {
  description = "Image digest (sha256:...); wins over the tag. Set it in production."
  type        = string
  default     = ""

  validation {
    condition     = var.image_digest == "" || can(regex("^sha256:[a-f0-9]{64}$", var.image_digest))
    error_message = "image_digest must be empty or sha256:<64 hex digits>."
  }
}

variable "secret_source" {
  description = "existing: this module makes the Secret from admin_token and audit_key; external: the chart's ExternalSecret reads them from a secret store (values file); create: the chart makes random ones (dev only)."
  type        = string
  default     = "existing"

  validation {
    condition     = contains(["existing", "external", "create"], var.secret_source)
    error_message = "secret_source must be existing, external or create."
  }
}

variable "admin_token" {
  description = "Admin plane bearer token (secret_source = existing). Pass it from a secret store or TF_VAR_admin_token, never a committed file."
  type        = string
  default     = null
  sensitive   = true
}

variable "audit_key" {
  description = "Audit key: the HMAC-SHA256 key applied to entity identifiers in audit records (secret_source = existing). At least 32 characters."
  type        = string
  default     = null
  sensitive   = true
}

variable "transaction_processor_namespace_labels" {
  description = "Labels that mark the namespaces allowed to call the data plane."
  type        = map(string)
  default     = { "riskwire.io/role" = "transaction-processor" }
}

variable "operations_namespace_labels" {
  description = "Labels that mark the namespaces allowed to call the admin plane."
  type        = map(string)
  default     = { "riskwire.io/role" = "operations" }
}

variable "monitoring_namespace" {
  description = "Namespace of Prometheus, allowed to scrape /metrics."
  type        = string
  default     = "monitoring"
}

variable "otlp_endpoint" {
  description = "OTLP endpoint of the OpenTelemetry collector for traces; empty: tracing off."
  type        = string
  default     = ""
}

variable "otlp_namespace" {
  description = "Namespace of the OpenTelemetry collector (egress is allowed to it when otlp_endpoint is set)."
  type        = string
  default     = "observability"
}

variable "kafka_cidrs" {
  description = "CIDRs of the Kafka brokers the gateway may reach; empty: no Kafka egress."
  type        = list(string)
  default     = []
}

variable "kafka_ports" {
  description = "Ports of the Kafka brokers."
  type        = list(number)
  default     = [9092]
}

variable "min_replicas" {
  description = "Fewest replicas of the HorizontalPodAutoscaler; null: the values file's."
  type        = number
  default     = null
}

variable "max_replicas" {
  description = "Most replicas of the HorizontalPodAutoscaler; null: the values file's."
  type        = number
  default     = null
}

variable "extra_values" {
  description = "Further chart values (a map, encoded to YAML), applied after the environment's values file."
  type        = any
  default     = {}
}

variable "helm_timeout_seconds" {
  description = "How long helm waits for the rollout (the pods load and warm their models first)."
  type        = number
  default     = 600
}
