// bench/peers/node_echo.js PORT: an echo server on Node's `net`: bytes are
// echoed as they arrive.
const port = +process.argv[2] || 7002;
require('net')
  .createServer({ noDelay: true }, (s) => {
    s.on('data', (d) => s.write(d));
    s.on('error', () => s.destroy());
  })
  .listen(port, '127.0.0.1', () => console.error(`listening on 127.0.0.1:${port}`));
