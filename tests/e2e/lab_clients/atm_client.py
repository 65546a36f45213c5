# The ATM client of seed 003 (Problem B), the lab's own code, kept as written apart from
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
SERVER = "127.0.0.1"  # changed: was SERVER = socket.gethostname(socket.gethostname())

ADDR = (SERVER, PORT)
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect(ADDR)
def send(id:str, password:str, choice:str = "", amount:str = ""):
    msg = id + password + choice+ amount
    message = msg.encode(FORMAT)
    msgLength = len(message)
    sendLength = str(msgLength).encode(FORMAT)
    sendLength += b' ' * (HEADER - len(sendLength))
    client.send(sendLength)
    client.send(message)

while True:
    id = input("Enter ID: ")
    password = input("Enter Password: ")
    send(id, password)

    print(client.recv(2048).decode(FORMAT))

    choice = input("Enter choice: ")
    send(id, password, choice)

    if choice == "1":
        print(client.recv(2048).decode(FORMAT))

    elif choice == "2":
        print(client.recv(2048).decode(FORMAT))
        amount = input("Enter amount: ")
        send(id, password, amount)
        print(client.recv(2048).decode(FORMAT))

    elif choice == "3":
        print(client.recv(2048).decode(FORMAT))
        amount = input("Enter amount: ")
        send(id, password, amount)
        print(client.recv(2048).decode(FORMAT))
