// After the journeys (this file runs last): every page at a 1280-px window fits without
// scrolling sideways, event details read as labelled fields (no raw JSON), the hydration hook is
// invisible, and each page is saved to screenshots/ for review.
import { test, expect, type Page } from '@playwright/test';
import { addAuthenticator, enroll, hydrated, invite } from './helpers';

const pages = [
  { path: '/', name: 'overview' },
  { path: '/tenants', name: 'tenants' },
  { path: '/tenants/initech', name: 'tenant-initech' },
  { path: '/approvals', name: 'approvals' },
  { path: '/audit', name: 'audit-page' },
  { path: '/incidents', name: 'incidents-page' },
  { path: '/alerts', name: 'alerts-page' },
  { path: '/backups', name: 'backups-page' },
  { path: '/admins', name: 'admins-page' },
];

async function fits(page: Page, what: string) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  expect(scroll, `${what} is ${scroll}px wide in a ${client}px window`).toBeLessThanOrEqual(client);
  const marker = await page.getByTestId('hydration').boundingBox();
  expect(marker === null || (marker.width <= 1 && marker.height <= 1), `${what}: the hydration hook shows`).toBe(true);
  // (Playwright calls a 1-px box "visible": the size above is the check; screen readers skip it.)
  await expect(page.getByTestId('hydration')).toHaveAttribute('aria-hidden', 'true');
}

test('every page fits a 1280-px window, details are labelled fields, and each is screenshotted', async ({ browser }) => {
  test.setTimeout(120_000);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto('/login');
  await hydrated(page);
  await fits(page, '/login');
  await addAuthenticator(page);
  await enroll(page, invite(`layout-${Date.now()}@example.com`, 'platform_admin'), 'Layout Check');
  for (const { path, name } of pages) {
    await page.goto(path);
    await hydrated(page);
    await fits(page, path);
    await page.screenshot({ path: `screenshots/${name}.png`, fullPage: true });
  }

  // The rotation history of a tenant the journeys rotated, reverted and reset: fields, not JSON.
  await page.goto('/tenants/initech');
  await hydrated(page);
  const history = page.getByTestId('rotation-history');
  await expect(history.getByTestId('details').first()).toBeVisible();
  expect(await history.innerText()).not.toContain('{"');

  // An audit event's details, opened: labelled fields.
  await page.goto('/audit');
  await hydrated(page);
  await page.getByTestId('audit-events').locator('tbody tr').first().getByRole('button').click();
  await expect(page.getByTestId('audit-detail').getByTestId('details')).toBeVisible();
  expect(await page.getByTestId('audit-detail').innerText()).not.toContain('{"');
  await page.screenshot({ path: 'screenshots/audit-event.png', fullPage: true });
  await context.close();
});
