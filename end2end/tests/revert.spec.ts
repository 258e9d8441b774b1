// Revert to last-known-good: a platform admin rotates initech (a tenant on the real mail
// stand-in) from its page, finds the new password is bad for a client, and reverts with a
// reason and her passkey. The password from before the rotation logs in again over SMTP, the
// rotated one is refused, and nobody was shown a password on the way.
import { test, expect, type Page } from '@playwright/test';
import { addAuthenticator, enroll, hydrated, initechLogin, invite } from './helpers';

const TOKEN = process.env.SMTP_VAULT_E2E_TOKEN ?? '';


async function current(page: Page): Promise<{ password: string, version: number }> {
  const secret = await page.request.get('/api/v1/tenants/initech/smtp-credentials/secret', {
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  expect(secret.status()).toBe(200);
  // Metadata with the admin's own session (the e2e token may only write and read secrets).
  const meta = await page.request.get('/api/v1/tenants/initech/smtp-credentials');
  expect(meta.status()).toBe(200);
  return { password: (await secret.json()).password, version: (await meta.json()).version };
}

test('a platform admin reverts a bad rotation with a passkey, and the old password works again', async ({ browser }) => {
  test.setTimeout(120_000);
  const context = await browser.newContext();
  const page = await context.newPage();
  await addAuthenticator(page);
  await enroll(page, invite(`rita-${Date.now()}@example.com`, 'platform_admin'), 'Rita Revert');
  const before = await current(page);
  expect(initechLogin(before.password)).toBe(true);

  // Rotate now, from the tenant page.
  await page.goto('/tenants/initech');
  await hydrated(page);
  await page.getByTestId('rotate-now').click();
  await expect(page.getByText(`Rotated: version ${before.version + 1}.`)).toBeVisible({ timeout: 30_000 });
  const rotated = await current(page);
  expect(rotated.password).not.toBe(before.password);

  // The rotation was bad: revert, with a reason and the passkey.
  await page.getByLabel('Why revert (recorded, sent to security)').fill('the scanner cannot take the new password');
  await page.getByTestId('revert').click();
  await expect(page.getByText(`Reverted: version ${before.version + 2} holds the password of version ${before.version} again.`))
    .toBeVisible({ timeout: 30_000 });
  await expect(page.getByTestId('rotation-history')).toContainText('credential reverted');
  await page.screenshot({ path: 'screenshots/revert.png', fullPage: true });

  const after = await current(page);
  expect(after.password).toBe(before.password);
  expect(after.version).toBe(before.version + 2);
  expect(initechLogin(before.password)).toBe(true);
  expect(initechLogin(rotated.password)).toBe(false);
  // Nothing on the page showed a password.
  expect(await page.content()).not.toContain(before.password);
  await context.close();
});
