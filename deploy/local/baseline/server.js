// The comparison service of the limiter issue: fastify + rate-limiter-flexible against
// the same Redis Cluster, one check per request (a token-bucket-like points limiter).
'use strict';
// One process per core (BASELINE_WORKERS), as the limiter has one HTTP worker per core:
// a single node process would leave the second core to the limiter alone.
const cluster = require('node:cluster');
const os = require('node:os');
const workers = Number(process.env.BASELINE_WORKERS || os.availableParallelism());
if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', () => process.exit(1));
  return;
}

const fastify = require('fastify')({ logger: false });
const Redis = require('ioredis');
const { RateLimiterRedis } = require('rate-limiter-flexible');

const nodes = (process.env.REDIS_NODES || '127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002')
  .split(',').map((n) => { const [host, port] = n.split(':'); return { host, port: Number(port) }; });
const redis = new Redis.Cluster(nodes, { enableOfflineQueue: true });
const limiter = new RateLimiterRedis({
  storeClient: redis, keyPrefix: 'baseline', points: 1e12, duration: 1,
});

fastify.post('/v1/check', async (request, reply) => {
  const key = request.body && request.body.key;
  if (!key) return reply.code(401).send({ allowed: false, code: 'MISSING_KEY' });
  try {
    const res = await limiter.consume(key, 1);
    return { allowed: true, code: 'OK', remaining: res.remainingPoints };
  } catch (rej) {
    if (rej instanceof Error) return reply.code(503).send({ allowed: false, code: 'UNAVAILABLE' });
    return reply.code(429).send({ allowed: false, code: 'RATE_LIMITED' });
  }
});

fastify.listen({ port: Number(process.env.PORT || 3000), host: '127.0.0.1' });
