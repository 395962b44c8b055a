# terraform apply -var-file=environments/production.tfvars
environment      = "production"
namespace        = "riskwire"
kube_context     = "production"
image_repository = "registry.example.internal/riskwire/riskwire"
image_tag        = "0.1.0"
# Pin the released image by digest, e.g. "sha256:<64 hex digits>".
image_digest = ""
# The admin token and the audit key come from the secret store through the chart's
# ExternalSecret (values-production.yaml: secrets.external).
secret_source = "external"
otlp_endpoint = "http://otel-collector.observability.svc:4317"
min_replicas  = 3
max_replicas  = 30
namespace_labels = {
  "riskwire.io/tier" = "payments"
}
