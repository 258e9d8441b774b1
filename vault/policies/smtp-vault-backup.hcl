# Backup operator: read every tenant's (still envelope-encrypted) secret and its versions; no writes.

path "{{mount}}/data/*" {
  capabilities = ["read"]
}

path "{{mount}}/metadata/*" {
  capabilities = ["read", "list"]
}

path "{{mount}}/metadata" {
  capabilities = ["list"]
}
