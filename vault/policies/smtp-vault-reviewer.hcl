# Read-only reviewer: version metadata only (who changed what, when); never the secret data.

path "{{mount}}/metadata/*" {
  capabilities = ["read", "list"]
}

path "{{mount}}/metadata" {
  capabilities = ["list"]
}
