// The shell: every area renders on the server, the page hydrates, a server function answers.
import { test, expect } from '@playwright/test';
import { hydrated } from './helpers';

const areas = [
  { link: 'Overview', path: '/', heading: 'Overview' },
  { link: 'Credentials', path: '/tenants', heading: 'Credentials' },
  { link: 'Approvals', path: '/approvals', heading: 'Reveal approvals' },
  { link: 'Audit', path: '/audit', heading: 'Audit' },
  { link: 'Incidents', path: '/incidents', heading: 'Incidents' },
  { link: 'Backups', path: '/backups', heading: 'Backups' },
  { link: 'Admins', path: '/admins', heading: 'Admins' },
];

test('the shell renders on the server before any script runs', async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto('/');
  await expect(page.getByRole('heading', { level: 1, name: 'Overview' })).toBeVisible();
  await expect(page.getByTestId('hydration')).toHaveText('server-rendered');
  await context.close();
});

test('the page hydrates and the navigation reaches every area', async ({ page }) => {
  const errors: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto('/');
  await hydrated(page);
  await expect(page.getByTestId('hydration')).toHaveText('interactive');
  for (const area of areas) {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: area.link }).click();
    await expect(page).toHaveURL(new RegExp(`${area.path}$`));
    await expect(page.getByRole('heading', { level: 1, name: area.heading })).toBeVisible();
  }
  expect(errors).toEqual([]);
});

test('a server function answers a click after hydration', async ({ page }) => {
  await page.goto('/');
  await hydrated(page);
  await expect(page.getByTestId('readiness')).toContainText('active');
  const answered = page.waitForResponse((r) => r.url().includes('/_app/') && r.status() === 200);
  await page.getByTestId('recheck').click();
  await answered;
  await expect(page.getByTestId('readiness')).toHaveAttribute('data-checks', '1');
  await expect(page.getByTestId('readiness')).toContainText('Ready');
});

test('an unknown page is a 404 inside the shell', async ({ page }) => {
  const response = await page.goto('/no-such-page');
  expect(response?.status()).toBe(404);
  await expect(page.getByRole('heading', { level: 1, name: 'Not found' })).toBeVisible();
});
