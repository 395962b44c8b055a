# terraform apply -var-file=environments/dev.tfvars
environment      = "dev"
namespace        = "riskwire-dev"
kube_context     = "dev"
image_repository = "riskwire"
image_tag        = "demo"
# The chart makes random admin token and audit key (dev only).
secret_source = "create"
