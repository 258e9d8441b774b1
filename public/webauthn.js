// WebAuthn and clipboard glue for the hydrated UI (imported by the wasm bundle).
// JSON in, JSON out: the server's options go through the browser's native parsers and the
// credential goes back through toJSON(), which webauthn-rs accepts as is.

export async function create_credential(optionsJson) {
  const options = JSON.parse(optionsJson);
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey);
  const credential = await navigator.credentials.create({ publicKey });
  return JSON.stringify(credential.toJSON());
}

export async function get_assertion(optionsJson) {
  const options = JSON.parse(optionsJson);
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
  const credential = await navigator.credentials.get({ publicKey });
  return JSON.stringify(credential.toJSON());
}

export async function copy_text(text) {
  await navigator.clipboard.writeText(text);
}
