// Shared steps: invites through the real CLI, a CDP virtual authenticator per page, enrollment.
import { execFileSync, spawnSync } from 'node:child_process';
import { expect, type Page } from '@playwright/test';

/** A one-time enrollment link from `smtp-vault admin invite` (same env as the console). */
export function invite(email: string, role: string): string {
  const bin = process.env.SMTP_VAULT_BIN ?? '../target/debug/smtp-vault';
  const out = execFileSync(bin, ['admin', 'invite', '--email', email, '--role', role], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const link = out.trim();
  expect(link).toMatch(/\/enroll\/[A-Za-z0-9_-]+$/);
  return link;
}

/** Adds a platform authenticator with user verification to the page (Chromium CDP). */
export async function addAuthenticator(page: Page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  return { cdp, authenticatorId };
}

/** What the browser reported on this page: uncaught errors and console errors. */
async function browserErrors(page: Page): Promise<string> {
  const lines = [
    ...(await page.pageErrors()).map((e) => `uncaught: ${e.message}`),
    ...(await page.consoleMessages()).filter((m) => m.type() === 'error').map((m) => `console: ${m.text()}`),
  ];
  return lines.length ? lines.join('\n') : '(nothing)';
}

/**
 * Waits until the page has hydrated. A bundle that cannot hydrate (a broken wasm-opt, a panic
 * in the app) fails here with the browser's own errors, not with a click that did nothing.
 */
export async function hydrated(page: Page) {
  try {
    await expect(page.getByTestId('hydration')).toHaveAttribute('data-hydrated', 'true');
  } catch (e) {
    throw new Error(`the page did not hydrate; the browser reported:\n${await browserErrors(page)}`, { cause: e });
  }
  expect((await page.pageErrors()).map((e) => e.message), 'uncaught errors while hydrating').toEqual([]);
}

/** Opens an invite link and enrolls a passkey; ends signed in on the tenant list. */
export async function enroll(page: Page, link: string, name: string) {
  await page.goto(new URL(link).pathname);
  await hydrated(page);
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Create passkey' }).click();
  await expect(page.getByTestId('account')).toBeVisible();
}

/** Calls a server function directly, as an attacker with the page's cookie would. */
export async function callServerFn(page: Page, name: string, form: Record<string, string>) {
  return page.evaluate(async ([fn, body]) => {
    const response = await fetch(`/_app/${fn}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(body as Record<string, string>).toString(),
    });
    return { status: response.status, text: await response.text() };
  }, [name, form] as const);
}

/** A real SMTP AUTH login (STARTTLS) to initech's admin account on the mail stand-in, with
 * curl: true when the server accepts the password. */
export function initechLogin(password: string): boolean {
  const run = spawnSync('curl', [
    '--silent', '--max-time', '10', '--url', `smtp://localhost:${process.env.SMTP_VAULT_E2E_SMTP_PORT ?? ''}`,
    '--ssl-reqd', '--cacert', process.env.SMTP_VAULT_E2E_CA ?? '',
    '--user', `admin@initech.example:${password}`, '--request', 'NOOP',
  ]);
  // 67 = login denied; anything else but 0 is a broken test setup, not a refusal.
  expect([0, 67]).toContain(run.status);
  return run.status === 0;
}
