// Admin journeys: enroll from an invite → sign in → reveal with a reason → countdown → copy →
// the window closes and the password hides (and the server refuses) → revoke; a reviewer sees
// no reveal control and a direct server-function call is refused.
import { test, expect } from '@playwright/test';
import { addAuthenticator, callServerFn, enroll, hydrated, invite } from './helpers';

test.describe.configure({ mode: 'serial' });

test('a platform admin enrolls, signs in, reveals, copies, watches the window close and revokes', async ({ browser }) => {
  test.setTimeout(90_000);
  const context = await browser.newContext();
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  const page = await context.newPage();
  await addAuthenticator(page);
  const email = `alice-${Date.now()}@example.com`;

  await page.goto('/login');
  await expect(page.getByRole('heading', { name: 'Sign in' })).toBeVisible();
  await page.screenshot({ path: 'screenshots/login.png', fullPage: true });

  await enroll(page, invite(email, 'platform_admin'), 'Alice Admin');
  // Sign out, then sign in with the passkey just enrolled.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login$/);
  await hydrated(page);
  await page.getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Sign in with passkey' }).click();
  await expect(page.getByTestId('account')).toContainText(email);
  // The overview is the landing page; each figure opens the list behind it.
  await expect(page.getByRole('heading', { level: 1, name: 'Overview' })).toBeVisible();
  await expect(page.getByTestId('overview-states')).toContainText('Active');
  await page.screenshot({ path: 'screenshots/overview.png', fullPage: true });
  await page.getByTestId('overview-states').getByRole('link', { name: /^\d+\s*Active$/ }).click();
  await expect(page).toHaveURL(/\/tenants\?state=active$/);
  await expect(page.getByTestId('tenant-list')).toContainText('acme');
  await expect(page.getByTestId('state-filters').getByRole('link', { name: /^Active \(\d+\)$/ })).toHaveAttribute('aria-current', 'true');
  // A search narrows the page, keeping the state filter, with the total that match.
  await page.getByLabel('Search tenants').fill('acm');
  await page.getByRole('button', { name: 'Show' }).click();
  await expect(page).toHaveURL(/state=active&q=acm/);
  await expect(page.getByTestId('tenant-total')).toHaveText('1 shown of 1 matching');
  await page.screenshot({ path: 'screenshots/tenant-list.png', fullPage: true });

  // The tenant page never carries the password before a reveal.
  const html = await (await page.request.get('/tenants/acme')).text();
  expect(html).not.toContain('E2E-acme-Secret-Pass');
  await page.getByRole('link', { name: 'acme' }).click();
  await expect(page.getByTestId('masked')).toBeVisible();
  await page.getByLabel('Reason for revealing (recorded)').fill('INC-42: verify SMTP login for acme');
  await page.getByTestId('reveal').click();
  await expect(page.getByTestId('password')).toHaveText('E2E-acme-Secret-Pass');
  await expect(page.getByTestId('countdown')).toContainText(/hides in 00:0\d|hides in 00:10/);
  await page.screenshot({ path: 'screenshots/revealed-credential.png', fullPage: true });
  await page.getByTestId('copy').click();
  await expect(page.getByText('Copied to the clipboard.')).toBeVisible();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe('E2E-acme-Secret-Pass');

  // The window (10 s in this run) ends: the page hides the password, the server refuses.
  await expect(page.getByTestId('masked')).toBeVisible({ timeout: 20_000 });
  await expect(page.getByTestId('password')).toHaveCount(0);
  // The countdown may end up to a second before the server's window; the server decides.
  await expect.poll(async () => (await callServerFn(page, 'reveal_credential', { tenant_id: 'acme' })).status, { timeout: 5_000 }).toBe(403);
  const late = await callServerFn(page, 'reveal_credential', { tenant_id: 'acme' });
  expect(late.text).not.toContain('E2E-acme-Secret-Pass');

  // A new window, revoked from the list: hidden at once.
  await page.getByLabel('Reason for revealing (recorded)').fill('INC-42: second look');
  await page.getByTestId('reveal').click();
  await expect(page.getByTestId('password')).toBeVisible();
  await expect(page.getByTestId('grants')).toContainText('INC-42: second look');
  await page.getByTestId('revoke').click();
  await expect(page.getByTestId('masked')).toBeVisible();
  await expect(page.getByTestId('no-grants')).toBeVisible();
  expect((await callServerFn(page, 'reveal_credential', { tenant_id: 'acme' })).status).toBe(403);
  await context.close();
});

test('a security reviewer sees no reveal control and a direct server-function call is refused', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await addAuthenticator(page);
  await enroll(page, invite(`rita-${Date.now()}@example.com`, 'security_reviewer'), 'Rita Reviewer');
  await page.goto('/tenants/acme');
  await expect(page.getByTestId('metadata')).toContainText('admin@acme.example');
  await expect(page.getByTestId('masked')).toBeVisible();
  await expect(page.getByTestId('reveal')).toHaveCount(0);
  const begin = await callServerFn(page, 'begin_reveal', { tenant_id: 'acme', reason: 'just curious', category: 'other' });
  expect(begin.status).toBe(403);
  const reveal = await callServerFn(page, 'reveal_credential', { tenant_id: 'acme' });
  expect(reveal.status).toBe(403);
  expect(reveal.text).not.toContain('E2E-acme-Secret-Pass');
  // Anonymous callers get nothing either.
  const anonymous = await browser.newContext();
  const stranger = await anonymous.newPage();
  await stranger.goto('/');
  expect((await callServerFn(stranger, 'list_tenants', { state: '', due_days: '', search: '', cursor: '' })).status).toBe(401);
  await anonymous.close();
  await context.close();
});
