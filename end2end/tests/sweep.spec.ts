// Exposure sweep, two people in two browsers: Bob (platform admin) reveals initech's password
// (a tenant on the real mail stand-in). Alice, on the Incidents page, lists what Bob could see
// (changes nothing), then sweeps with her passkey: the incident shows the progress until
// initech is rotated; the password Bob saw is refused over SMTP and the new one logs in; Bob's
// window is closed; security got the alert.
import { test, expect, type Page } from '@playwright/test';
import { addAuthenticator, callServerFn, enroll, hydrated, initechLogin, invite } from './helpers';

const SINK = process.env.SMTP_VAULT_SINK_URL ?? '';
const TOKEN = process.env.SMTP_VAULT_E2E_TOKEN ?? '';


async function currentPassword(page: Page): Promise<string> {
  const response = await page.request.get('/api/v1/tenants/initech/smtp-credentials/secret', {
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  expect(response.status()).toBe(200);
  return (await response.json()).password;
}

test('an exposure sweep lists what an admin saw, then rotates it under one incident', async ({ browser }) => {
  test.setTimeout(120_000);
  const stamp = Date.now();
  const bobEmail = `bob-sweep-${stamp}@example.com`;
  const incidentId = `INC-SWEEP-${stamp}`;
  const bobContext = await browser.newContext();
  const bob = await bobContext.newPage();
  await addAuthenticator(bob);
  await enroll(bob, invite(bobEmail, 'platform_admin'), 'Bob Sweep');
  const aliceContext = await browser.newContext();
  const alice = await aliceContext.newPage();
  await addAuthenticator(alice);
  await enroll(alice, invite(`alice-sweep-${stamp}@example.com`, 'platform_admin'), 'Alice Sweep');

  // Bob reveals initech.
  await bob.goto('/tenants/initech');
  await hydrated(bob);
  await bob.getByLabel('Reason for revealing (recorded)').fill(`${incidentId}: checking the relay`);
  await bob.getByTestId('reveal').click();
  const seen = await currentPassword(bob);
  await expect(bob.getByTestId('password')).toHaveText(seen);
  expect(initechLogin(seen)).toBe(true);

  // Alice lists what Bob could see: initech, and nothing changes.
  await alice.goto('/incidents');
  await hydrated(alice);
  await alice.getByLabel('Admin email or token id').fill(bobEmail);
  await alice.getByTestId('sweep-list').click();
  const answer = alice.getByTestId('sweep-answer');
  await expect(answer).toContainText('1 tenant(s) would be rotated. Nothing changed.');
  await expect(answer.getByTestId('sweep-tenant')).toContainText('initech');
  expect(await currentPassword(alice)).toBe(seen);

  // She sweeps, with her incident id and reason, confirmed by her passkey.
  await alice.getByLabel('Incident id (optional)').fill(incidentId);
  await alice.getByLabel('Reason (sent to security)').fill('Bob left the company laptop on a train');
  await alice.getByTestId('sweep').click();
  await expect(answer).toContainText('sweeping 1 tenant(s) under incident record');
  const incident = alice.getByTestId('incident').filter({ hasText: incidentId });
  await expect(incident).toContainText(`exposure sweep of admin ${bobEmail}`);
  // The list looks again by itself while the sweep runs.
  await expect(incident.getByTestId('sweep-progress')).toContainText('1 of 1 done', { timeout: 30_000 });
  await expect(incident.getByTestId('swept-tenant')).toContainText('initech: rotated');
  await expect(incident.getByTestId('incident-outcome')).toContainText('rotated');
  await alice.screenshot({ path: 'screenshots/sweep.png', fullPage: true });

  // What Bob saw no longer logs in; the new password does; his window is closed.
  const fresh = await currentPassword(alice);
  expect(fresh).not.toBe(seen);
  expect(initechLogin(fresh)).toBe(true);
  expect(initechLogin(seen)).toBe(false);
  expect((await callServerFn(bob, 'reveal_credential', { tenant_id: 'initech' })).status).toBe(403);

  // Security heard of it, without any password.
  await expect.poll(async () => {
    const m = await (await alice.request.get(`${SINK}/_sink/messages`)).json();
    return m.emails.filter((e: { subject: string }) => e.subject.includes(`exposure sweep of admin ${bobEmail}`)).length;
  }, { timeout: 20_000 }).toBe(1);
  const all = JSON.stringify(await (await alice.request.get(`${SINK}/_sink/messages`)).json());
  expect(all).not.toContain(fresh);
  expect(all).not.toContain(seen);
  await aliceContext.close();
  await bobContext.close();
});
