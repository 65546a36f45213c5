# Test fixture: seed 003's text server (Problem A.1) as the handout prints it.
# Only the address changed (lines marked "fixture:"). Not socklab code.
#(a) 1. Capital letter to Small letter conversion for a line of text. This pro

import socket
import threading
import os  # fixture: the port comes from the environment

HEADER = 64
PORT = int(os.environ["HANDOUT_PORT"])  # fixture: was PORT = 5050
FORMAT = 'utf-8'
DISCONNECTMESSAGE = "!DISCONNECT"

SERVER = "127.0.0.1"  # fixture: was socket.gethostbyname(socket.gethostname())
ADDR = (SERVER, PORT)

print (SERVER)

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(ADDR)


def handleClient(conn, addr):
    print(f"[NEW CONNECTION] {addr} connected.")

    connected = True
    while connected:
        msgLength = conn.recv(HEADER).decode(FORMAT)
        if msgLength:
            msgLength = int(msgLength)
            msg = conn.recv(msgLength).decode(FORMAT)
            print("Message received: ", msg)
            if msg == DISCONNECTMESSAGE:
                connected = False

        print(f"[{addr}] {msg.upper()}")

        response = f"[Lower Case] {msg.lower()} [Upper Case] {msg.upper()}"

        conn.send(response.encode(FORMAT))
    conn.close()

def start():
    server.listen()
    print(f"[LISTENING] Server is listening on {SERVER}")
    while True:
        conn, addr = server.accept()
        thread = threading.Thread(target=handleClient, args=(conn, addr))
        thread.start()
        print(f"[ACTIVE CONNECTIONS] {threading.activeCount() - 1}")

print("[STARTING] server is starting...")

start()
