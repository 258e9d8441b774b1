// Monitoring journey: someone tries to sign in as an unknown admin five times; the console's
// rules notice on their own, the security mailbox and Slack hear of it once, and an admin
// finds the alert on the Alerts page, next to the rules in effect, and acknowledges it.
import { test, expect, type Page } from '@playwright/test';
import { addAuthenticator, enroll, hydrated, invite } from './helpers';

const SINK = process.env.SMTP_VAULT_SINK_URL ?? 'http://127.0.0.1:0';

async function sinkMessages(page: Page) {
  return (await page.request.get(`${SINK}/_sink/messages`)).json();
}

test('failed logins raise one alert, delivered to both sinks and acknowledged on the Alerts page', async ({ browser }) => {
  test.setTimeout(90_000);
  const mallory = `mallory-${Date.now()}@example.com`;
  const attacker = await browser.newContext();
  const door = await attacker.newPage();
  await door.goto('/login');
  await hydrated(door);
  for (let attempt = 0; attempt < 5; attempt++) {
    await door.getByLabel('Email').fill(mallory);
    const answered = door.waitForResponse((r) => r.url().endsWith('/_app/begin_login'));
    await door.getByRole('button', { name: 'Sign in with passkey' }).click();
    expect((await answered).status()).toBe(401);
    await expect(door.getByRole('alert')).toBeVisible();
  }
  await attacker.close();

  // The rules run inside the console as events arrive: nobody presses anything.
  const context = await browser.newContext();
  const page = await context.newPage();
  await expect.poll(async () => {
    const m = await sinkMessages(page);
    const emails = m.emails.filter((e: { subject: string }) => e.subject.includes(`failed logins for ${mallory}`)).length;
    const slack = m.slack.filter((s: { text: string }) => s.text.includes(`failed logins for ${mallory}`)).length;
    return [emails, slack];
  }, { timeout: 20_000 }).toEqual([1, 1]);

  await addAuthenticator(page);
  const ada = `ada-${Date.now()}@example.com`;
  await enroll(page, invite(ada, 'platform_admin'), 'Ada Admin');
  await page.goto('/alerts');
  await hydrated(page);
  const row = page.getByTestId('alerts').locator('tr[data-kind="failed_logins"]').filter({ hasText: mallory });
  await expect(row).toHaveCount(1);
  await expect(row).toContainText('warning');
  await expect(row).toContainText('email');
  await expect(row).toContainText('slack');
  await expect(page.getByTestId('alert-rules').locator('tr[data-kind="reveal_burst"]')).toContainText('within 10 minutes');
  await row.getByTestId('acknowledge-alert').click();
  await expect(row.getByTestId('alert-acknowledged')).toContainText(ada);
  await page.screenshot({ path: 'screenshots/alerts.png', fullPage: true });
  await context.close();
});
