# smtp-vault console: read, write and list tenant credentials on its own KV v2 mount; nothing else.
# ({{mount}} is replaced by the configured mount, default `smtp`, when `smtp-vault vault-setup` writes it.)
# Token self-lookup and renewal come from Vault's `default` policy.

path "{{mount}}/data/*" {
  capabilities = ["create", "read", "update", "delete"]
}

path "{{mount}}/metadata/*" {
  capabilities = ["read", "list", "update", "delete"]
}

path "{{mount}}/metadata" {
  capabilities = ["list"]
}

path "{{mount}}/undelete/*" {
  capabilities = ["update"]
}
