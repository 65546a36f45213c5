# The text client and the number client of seed 003 (Problem A) are one and the same
# program; this is the lab's own code, kept as written apart from
# the server address: SERVER and PORT below were changed to read 127.0.0.1 and the port
# from the command line (the original resolved this host's name and used port 5050).
# Left unformatted and unlinted on purpose.
# ruff: noqa
# fmt: off
import socket

HEADER = 64
PORT = int(__import__("sys").argv[1])  # changed: was PORT = 5050
FORMAT = "utf-8"
DISCONNECT_MESSAGE = "!DISCONNECT"
SERVER = "127.0.0.1"  # changed: was SERVER = socket.gethostbyname(socket.gethostname())

ADDR = (SERVER, PORT)
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect(ADDR)

def send(msg:str):
    message = msg.encode(FORMAT)
    msgLength = len(message)
    sendLength = str(msgLength).encode(FORMAT)
    sendLength += b' ' * (HEADER - len(sendLength))
    client.send(sendLength)
    client.send(message)

while True:
    msg = input("Enter message: ")
    send(msg)
    print(client.recv(2048).decode(FORMAT))
    if msg == DISCONNECT_MESSAGE:
        break
