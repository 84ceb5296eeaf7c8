// winston's colorize() before json(): the level written with its terminal colours inside the JSON string
const winston = require('winston');
const logger = winston.createLogger({
  level: 'info',
  format: winston.format.combine(winston.format.colorize(), winston.format.errors({stack: true}), winston.format.json()),
  transports: [new winston.transports.Console()],
});
logger.info('server started');
logger.warn('slow request 1234 ms');
for (const n of [17, 18]) logger.error(new TypeError(`order ${n} has no total`));
logger.error('charge failed', {error: 'card declined'});
