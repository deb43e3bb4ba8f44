// node-radius (the `radius` npm package) as a NAS, as the README's recipe uses it: an
// Access-Request with the PIN, then, on an Access-Challenge, a second one with the State and
// the code read from stdin. Prints one line per reply ("reply CODE" / "timeout") and exits 0
// on an Access-Accept.
//
//   node radius_flow.js HOST PORT SECRET USER PIN [--message-authenticator]
'use strict';
const dgram = require('dgram');
const readline = require('readline');
const radius = require('radius');

const [host, port, secret, user, pin, flag] = process.argv.slice(2);
const addMessageAuthenticator = flag === '--message-authenticator';
const socket = dgram.createSocket('udp4');
const lines = readline.createInterface({ input: process.stdin });
let identifier = 0;

function exchange(attributes) {
  identifier = (identifier + 1) % 256;
  const packet = radius.encode({
    code: 'Access-Request',
    secret,
    identifier,
    attributes,
    add_message_authenticator: addMessageAuthenticator,
  });
  return new Promise((resolve) => {
    let tries = 0;
    const send = () => {
      if (tries++ === 3) {
        socket.removeListener('message', onMessage);
        resolve(null);
        return;
      }
      socket.send(packet, Number(port), host);
      timer = setTimeout(send, 1000);
    };
    const onMessage = (message) => {
      const reply = radius.decode({ packet: message, secret });
      if (reply.identifier !== identifier) return;
      if (!radius.verify_response({ response: message, request: packet, secret })) {
        console.log('reply with a wrong authenticator');
        process.exit(3);
      }
      clearTimeout(timer);
      socket.removeListener('message', onMessage);
      resolve(reply);
    };
    let timer;
    socket.on('message', onMessage);
    send();
  });
}

function nextLine() {
  return new Promise((resolve) => lines.once('line', resolve));
}

(async () => {
  const base = [['User-Name', user], ['NAS-Identifier', 'node-radius']];
  let reply = await exchange([...base, ['User-Password', pin]]);
  if (reply === null) {
    console.log('timeout');
    process.exit(2);
  }
  console.log(`reply ${reply.code}`);
  if (reply.code === 'Access-Challenge') {
    const code = (await nextLine()).trim();
    reply = await exchange([...base, ['User-Password', code], ['State', reply.attributes.State]]);
    if (reply === null) {
      console.log('timeout');
      process.exit(2);
    }
    console.log(`reply ${reply.code}`);
  }
  process.exit(reply.code === 'Access-Accept' ? 0 : 1);
})();
