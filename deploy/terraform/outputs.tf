output "namespace" {
  description = "Namespace the gateway runs in."
  value       = kubernetes_namespace_v1.riskwire.metadata[0].name
}

output "release_name" {
  description = "Helm release name."
  value       = helm_release.riskwire.name
}

output "chart_version" {
  description = "Version of the chart installed."
  value       = helm_release.riskwire.metadata.version
}

output "data_plane_address" {
  description = "In-cluster address of the gRPC data plane."
  value       = "${var.release_name}.${var.namespace}.svc:50051"
}

output "admin_plane_address" {
  description = "In-cluster address of the gRPC admin plane."
  value       = "${var.release_name}-admin.${var.namespace}.svc:50052"
}

output "metrics_address" {
  description = "In-cluster address of /metrics, /healthz and /readyz."
  value       = "${var.release_name}-metrics.${var.namespace}.svc:9464"
}

output "secret_name" {
  description = "Secret holding the admin token and the audit key."
  value       = local.secret_name
}
