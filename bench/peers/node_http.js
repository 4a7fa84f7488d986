// bench/peers/node_http.js PORT: "hello" over Node's `http`, keep-alive.
// The body is as long as examples/http.lua's greeting (19 bytes).
const port = +process.argv[2] || 7103;
const body = 'hello from a peer!\n';
require('http')
  .createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  })
  .listen(port, '127.0.0.1', () => console.error(`listening on 127.0.0.1:${port}`));
