// Incident responder journey: a platform admin with an open reveal window for initech (a
// tenant on the real mail stand-in) presses the emergency reset on the Incidents page with a
// passkey. Afterwards: the new password logs in over SMTP and the old one is refused, no
// reveal window is open, one critical audit event, one email and one Slack message at the
// sinks, a tenant notification, an open incident the same admin cannot acknowledge; a second
// admin acknowledges it.
import { execFileSync } from 'node:child_process';
import { test, expect, type Page } from '@playwright/test';
import { addAuthenticator, callServerFn, enroll, hydrated, initechLogin, invite } from './helpers';

const BIN = process.env.SMTP_VAULT_BIN ?? '../target/debug/smtp-vault';
const SINK = process.env.SMTP_VAULT_SINK_URL ?? '';
const TOKEN = process.env.SMTP_VAULT_E2E_TOKEN ?? '';
const CONTACT = 'it@initech.example';


async function currentPassword(page: Page): Promise<string> {
  const response = await page.request.get('/api/v1/tenants/initech/smtp-credentials/secret', {
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  expect(response.status()).toBe(200);
  expect(response.headers()['cache-control']).toBe('no-store');
  return (await response.json()).password;
}

async function sinkMessages(page: Page) {
  return (await page.request.get(`${SINK}/_sink/messages`)).json();
}

test('an emergency reset from the Incidents page, then a second admin acknowledges it', async ({ browser }) => {
  test.setTimeout(120_000);
  // Unique per run, so the journey can run again against the same console.
  const incidentId = `INC-E2E-${Date.now()}`;
  const since = new Date(Date.now() - 1000).toISOString();
  const context = await browser.newContext();
  const page = await context.newPage();
  await addAuthenticator(page);
  const email = `ivy-${Date.now()}@example.com`;
  await enroll(page, invite(email, 'platform_admin'), 'Ivy Incident');

  // The tenant's contact for notices, set in its settings.
  await page.goto('/tenants/initech');
  await hydrated(page);
  await expect(page.getByTestId('metadata')).toContainText('admin@initech.example');
  await page.getByLabel('Contact email for notices').fill(CONTACT);
  await page.getByRole('button', { name: 'Save settings' }).click();
  await expect(page.getByText('Settings saved.')).toBeVisible();

  const old = await currentPassword(page);
  expect(initechLogin(old)).toBe(true);

  // An open reveal window, which the reset must close.
  await page.getByLabel('Reason for revealing (recorded)').fill(`${incidentId}: checking before the reset`);
  await page.getByTestId('reveal').click();
  await expect(page.getByTestId('password')).toHaveText(old);

  // The reset: tenant, incident id, reason, passkey.
  await page.goto('/incidents');
  await hydrated(page);
  await page.getByLabel('Tenant', { exact: true }).fill('initech');
  await page.getByLabel('Incident id', { exact: true }).fill(incidentId);
  await page.getByLabel('Reason (sent to security, never to the tenant)').fill('password pasted into a public ticket');
  await page.getByTestId('reset').click();
  const receipt = page.getByTestId('reset-receipt');
  await expect(receipt).toContainText('Reset done', { timeout: 30_000 });
  await expect(receipt).toContainText('Reveal windows closed1');
  await expect(receipt).toContainText(`email to ${CONTACT}`);

  // A new password that logs in; the old one is refused.
  const fresh = await currentPassword(page);
  expect(fresh).not.toBe(old);
  expect(initechLogin(fresh)).toBe(true);
  expect(initechLogin(old)).toBe(false);

  // No open reveal window for the tenant.
  expect((await callServerFn(page, 'reveal_credential', { tenant_id: 'initech' })).status).toBe(403);
  const grants = await callServerFn(page, 'list_grants', { tenant_id: 'initech' });
  expect(JSON.parse(grants.text)).toEqual([]);

  // One critical audit event for the tenant: the reset.
  const critical = execFileSync(BIN, ['audit', 'export', '--tenant', 'initech', '--severity', 'critical', '--since', since], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'],
  }).trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
  expect(critical.map((e) => e.event)).toEqual(['emergency_reset']);
  expect(critical[0].details.incident_id).toBe(incidentId);

  // The sinks: one security email, one Slack message, one letter to the tenant.
  await expect.poll(async () => {
    const m = await sinkMessages(page);
    const security = m.emails.filter((e: { subject: string }) => e.subject.includes('emergency reset of initech')
      && e.subject.includes(incidentId)).length;
    const slack = m.slack.filter((s: { text: string }) => s.text.includes('emergency reset of initech')
      && s.text.includes(incidentId)).length;
    const letters = m.emails.filter((e: { subject: string, to: string[], data: string }) =>
      e.subject.includes('(initech) was reset') && JSON.stringify(e.to).includes(CONTACT) && e.data.includes(incidentId)).length;
    return [security, slack, letters];
  }, { timeout: 20_000 }).toEqual([1, 1, 1]);
  const all = await sinkMessages(page);
  expect(JSON.stringify(all)).not.toContain(fresh);

  // An open incident; the admin who reset cannot acknowledge it.
  await page.reload();
  const incident = page.getByTestId('incident').filter({ hasText: incidentId });
  await expect(incident).toHaveAttribute('data-state', 'open');
  await expect(incident.getByTestId('incident-outcome')).toContainText('rotated');
  await expect(incident).toContainText('Another admin must acknowledge your reset.');
  await expect(incident.getByTestId('acknowledge')).toHaveCount(0);
  const record = await incident.getAttribute('data-incident');
  const own = await callServerFn(page, 'acknowledge_incident', { incident: record ?? '', note: 'my own reset is fine' });
  expect(own.status).toBe(403);
  await page.screenshot({ path: 'screenshots/incidents.png', fullPage: true });
  await page.goto('/alerts');
  await expect(page.getByTestId('alerts').locator('tr[data-kind="emergency_reset"]').first()).toBeVisible();

  // A second admin reviews and acknowledges.
  const second = await browser.newContext();
  const reviewer = await second.newPage();
  await addAuthenticator(reviewer);
  await enroll(reviewer, invite(`rex-${Date.now()}@example.com`, 'security_reviewer'), 'Rex Reviewer');
  await reviewer.goto('/incidents');
  await expect(reviewer.getByTestId('reset')).toHaveCount(0);
  const card = reviewer.getByTestId('incident').filter({ hasText: incidentId });
  await card.getByLabel('Review note').fill('ticket scrubbed, new password confirmed');
  await card.getByTestId('acknowledge').click();
  await expect(card).toHaveAttribute('data-state', 'acknowledged');
  await expect(card).toContainText('ticket scrubbed, new password confirmed');
  await second.close();
  await context.close();
});
