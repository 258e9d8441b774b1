// Four-eyes reveals, two people in two browsers (each context with its own virtual
// authenticator): Alice marks globex four-eyes and asks to reveal it; she cannot approve her own
// request; Bob approves it on the Approvals page with his passkey; Alice's page notices and shows
// the password; switching four eyes off again is possible in her confirmed session.
import { test, expect } from '@playwright/test';
import { addAuthenticator, callServerFn, enroll, hydrated, invite } from './helpers';

test('a reveal of a four-eyes tenant waits for a second platform admin, who approves it with a passkey', async ({ browser }) => {
  test.setTimeout(120_000);
  const stamp = Date.now();
  const aliceEmail = `alice-4e-${stamp}@example.com`;
  const bobEmail = `bob-4e-${stamp}@example.com`;
  const aliceContext = await browser.newContext();
  const alice = await aliceContext.newPage();
  await addAuthenticator(alice);
  const bobContext = await browser.newContext();
  const bob = await bobContext.newPage();
  await addAuthenticator(bob);
  await enroll(alice, invite(aliceEmail, 'platform_admin'), 'Alice Four-Eyes');
  await enroll(bob, invite(bobEmail, 'platform_admin'), 'Bob Four-Eyes');

  // Alice marks globex four-eyes (her passkey confirms the change).
  await alice.goto('/tenants/globex');
  await hydrated(alice);
  await alice.getByTestId('four-eyes').check();
  await alice.getByRole('button', { name: 'Save settings' }).click();
  await expect(alice.getByText('Settings saved.')).toBeVisible();

  // She asks: her reason and her passkey file a request, and nothing is shown.
  await alice.getByLabel('Reason for revealing (recorded)').fill('CHG-7: check the globex relay');
  await alice.getByTestId('reveal').click();
  await expect(alice.getByTestId('awaiting-approval')).toBeVisible();
  await expect(alice.getByTestId('masked')).toBeVisible();
  expect((await callServerFn(alice, 'reveal_credential', { tenant_id: 'globex' })).status).toBe(403);
  await alice.screenshot({ path: 'screenshots/four-eyes-waiting.png', fullPage: true });

  // On the Approvals page her own request has no buttons (and the server refuses her anyway).
  const aliceApprovals = await aliceContext.newPage();
  await aliceApprovals.goto('/approvals');
  await hydrated(aliceApprovals);
  const hers = aliceApprovals.getByTestId('reveal-request').filter({ hasText: 'CHG-7' });
  await expect(hers).toContainText('yours: another platform admin decides');
  await expect(hers.getByTestId('approve')).toHaveCount(0);
  await aliceApprovals.close();

  // Bob sees who, what and why, and approves with his own passkey.
  await bob.goto('/approvals');
  await hydrated(bob);
  const request = bob.getByTestId('reveal-request').filter({ hasText: 'CHG-7' });
  await expect(request).toContainText(aliceEmail);
  await expect(request).toContainText('globex');
  await bob.screenshot({ path: 'screenshots/four-eyes-approvals.png', fullPage: true });
  await request.getByTestId('approve').click();
  await expect(bob.getByText(`Approved: ${aliceEmail} for globex.`)).toBeVisible();
  await expect(bob.getByTestId('reveal-request').filter({ hasText: 'CHG-7' })).toHaveAttribute('data-status', 'approved');

  // Alice's page notices by itself; her window is open in her session only.
  await expect(alice.getByText(`Approved by ${bobEmail}`)).toBeVisible({ timeout: 15_000 });
  await alice.getByRole('button', { name: 'Show' }).click();
  await expect(alice.getByTestId('password')).toHaveText('E2E-globex-Secret-Pass');
  expect((await callServerFn(bob, 'reveal_credential', { tenant_id: 'globex' })).text).not.toContain('E2E-globex-Secret-Pass');

  // Switching four eyes off again, in her confirmed session (security is alerted).
  await alice.reload();
  await hydrated(alice);
  await alice.getByTestId('four-eyes').uncheck();
  await alice.getByRole('button', { name: 'Save settings' }).click();
  await expect(alice.getByText('Settings saved.')).toBeVisible();
  await aliceContext.close();
  await bobContext.close();
});
