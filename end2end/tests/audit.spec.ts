// Reviewer journey on the audit trail: filter by tenant and event, page through, open an
// event's details, export the filtered events as CSV, verify the chain.
import { readFileSync } from 'node:fs';
import { test, expect } from '@playwright/test';
import { addAuthenticator, enroll, hydrated, invite } from './helpers';

test('a security reviewer filters the audit trail, opens an event and verifies the chain', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await addAuthenticator(page);
  await enroll(page, invite(`rae-${Date.now()}@example.com`, 'security_reviewer'), 'Rae Reviewer');
  await page.goto('/audit');
  await hydrated(page);
  await expect(page.getByTestId('audit-events')).toBeVisible();

  await page.getByLabel('Tenant').fill('acme');
  await page.getByLabel('Event', { exact: true }).fill('credential_stored');
  await page.getByRole('button', { name: 'Filter' }).click();
  const rows = page.getByTestId('audit-events').locator('tbody tr');
  await expect(rows.first()).toContainText('credential_stored');
  for (const row of await rows.all()) {
    await expect(row).toContainText('acme');
    await expect(row).toContainText('credential_stored');
  }
  await rows.first().getByRole('button').click();
  await expect(page.getByTestId('audit-detail')).toContainText('credential_stored');
  await expect(page.getByTestId('audit-detail')).not.toContainText('E2E-acme-Secret-Pass');

  // The export follows the filter and streams as a download.
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-csv').click()]);
  const csv = readFileSync(await download.path(), 'utf8');
  const lines = csv.split('\r\n').filter(Boolean);
  expect(lines[0]).toMatch(/^seq,occurred_at,event,severity/);
  expect(lines.length).toBeGreaterThan(1);
  for (const line of lines.slice(1)) expect(line).toContain(',credential_stored,');
  expect(csv).not.toContain('E2E-acme-Secret-Pass');

  await page.getByLabel('Event', { exact: true }).fill('no_such_event');
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(page.getByTestId('no-events')).toBeVisible();

  await expect(page.getByTestId('audit-chart')).toContainText('No events');

  // Back to everything about acme: the per-day chart counts today's events.
  await page.getByLabel('Event', { exact: true }).fill('');
  await page.getByRole('button', { name: 'Filter' }).click();
  const today = new Date().toISOString().slice(0, 10);
  await expect(page.getByTestId('audit-chart').locator(`g[data-day="${today}"]`)).not.toHaveAttribute('data-count', '0');
  await expect(rows.first()).toContainText('acme');

  await page.getByTestId('verify-chain').click();
  await expect(page.getByTestId('chain-state')).toContainText('Intact');
  await page.screenshot({ path: 'screenshots/audit.png', fullPage: true });
  await context.close();
});
