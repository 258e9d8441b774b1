// Account changes ask for the passkey: a platform admin invites a colleague (the browser asks
// for a passkey confirmation first, a step-up of this session), sees the open invite, revokes
// it, and the revoked link no longer enrolls anyone. A second session of the same admin, with
// only the cookie, is refused the same change.
import { test, expect } from '@playwright/test';
import { addAuthenticator, callServerFn, enroll, hydrated, invite } from './helpers';

test('an invite needs a passkey confirmation and can be revoked before it is used', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const { cdp, authenticatorId } = await addAuthenticator(page);
  await enroll(page, invite(`ida-${Date.now()}@example.com`, 'platform_admin'), 'Ida Invite');
  await page.goto('/admins');
  await hydrated(page);

  // Without a step-up the server refuses the bare call, as it would a stolen cookie's.
  const refused = await callServerFn(page, 'create_invite', { email: 'bare@example.com', role: 'platform_admin' });
  expect(refused.status).toBe(403);
  expect(refused.text).toContain('step_up_required');

  // Through the page, the passkey is asked for (the virtual authenticator answers) and the
  // invite is made; the assertion counter shows the confirmation really happened.
  const before = (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials[0].signCount;
  const colleague = `cole-${Date.now()}@example.com`;
  await page.getByLabel('Email').fill(colleague);
  await page.getByRole('button', { name: 'Create invite link' }).click();
  const link = page.getByTestId('invite-link');
  await expect(link).toContainText(colleague);
  const after = (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials[0].signCount;
  expect(after).toBeGreaterThan(before);
  const url = (await link.locator('code').textContent()) ?? '';
  expect(url).toMatch(/\/enroll\/[A-Za-z0-9_-]+$/);

  // Revoke it (inside the confirmation window, no second prompt needed).
  const invites = page.getByTestId('invites');
  await expect(invites).toContainText(colleague);
  await invites.getByRole('listitem').filter({ hasText: colleague }).getByRole('button', { name: 'Revoke' }).click();
  await expect(page.getByTestId('invites')).toHaveCount(0);

  // The revoked link enrolls nobody.
  const other = await browser.newContext();
  const door = await other.newPage();
  await door.goto(new URL(url).pathname);
  await hydrated(door);
  await door.getByLabel('Your name').fill('Mallory');
  await addAuthenticator(door);
  await door.getByRole('button', { name: 'Create passkey' }).click();
  await expect(door.getByRole('alert')).toContainText('invalid, used or expired');
  await page.screenshot({ path: 'screenshots/admins.png', fullPage: true });
  await other.close();
  await context.close();
});
