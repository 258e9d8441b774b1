// Backups journey: a backup made with the CLI shows on the Backups page; a platform admin runs
// a dry-run restore with a passkey and watches it finish with every tenant verified.
import { execFileSync } from 'node:child_process';
import { test, expect } from '@playwright/test';
import { addAuthenticator, enroll, hydrated, invite } from './helpers';

const BIN = process.env.SMTP_VAULT_BIN ?? '../target/debug/smtp-vault';

test('a backup is listed and a dry-run restore with a passkey verifies every tenant', async ({ browser }) => {
  test.setTimeout(60_000);
  const out = execFileSync(BIN, ['backup', 'run'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const id = /^backup (\d{4}-\d{2}-\d{2}): (\d+) tenants/m.exec(out);
  expect(id).not.toBeNull();
  const [, backupId, tenants] = id!;

  const context = await browser.newContext();
  const page = await context.newPage();
  await addAuthenticator(page);
  await enroll(page, invite(`bea-${Date.now()}@example.com`, 'platform_admin'), 'Bea Backup');
  await page.goto('/backups');
  await hydrated(page);
  await expect(page.getByTestId('backups')).toContainText(backupId);
  await page.getByLabel('Backup', { exact: true }).fill(backupId);
  await page.getByTestId('restore').click();
  const status = page.getByTestId('restore-status');
  await expect(status).toHaveAttribute('data-running', 'false', { timeout: 30_000 });
  await expect(page.getByTestId('restore-result')).toContainText(`dry run: 0 written, ${tenants} unchanged, 0 skipped, 0 failed; ${tenants} verified`);
  await page.screenshot({ path: 'screenshots/backups.png', fullPage: true });
  await context.close();
});
