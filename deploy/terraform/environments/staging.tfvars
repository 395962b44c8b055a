# TF_VAR_admin_token=... TF_VAR_audit_key=... \
#   terraform apply -var-file=environments/staging.tfvars
environment      = "staging"
namespace        = "riskwire-staging"
kube_context     = "staging"
image_repository = "registry.example.internal/riskwire/riskwire"
image_tag        = "0.1.0"
# This module makes the Secret from TF_VAR_admin_token and TF_VAR_audit_key.
secret_source = "existing"
otlp_endpoint = "http://otel-collector.observability.svc:4317"
min_replicas  = 2
max_replicas  = 6
