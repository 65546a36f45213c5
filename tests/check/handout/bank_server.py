# Test fixture: seed 003's bank server (Problem B) as the handout prints it.
# Only the address changed (lines marked "fixture:"); the indentation lost at the
# handout's page breaks is restored to the structure the code shows. Not socklab code.

import socket
import threading
import utils
import random
import os  # fixture: the port comes from the environment

HEADER = 64
PORT = int(os.environ["HANDOUT_PORT"])  # fixture: was PORT = 5050
FORMAT = 'utf-8'
DISCONNECT_MESSAGE = "!DISCONNECT"

SERVER = "127.0.0.1"  # fixture: was socket.gethostbyname(socket.gethostname())
ADDR = (SERVER, PORT)

print(SERVER)

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(ADDR)

# Initialize counters for successful and total transactions
total_transactions = 0
successful_transactions = 0


def handleClient(conn, addr):
    global total_transactions, successful_transactions # Declare global variables

    print(f"[NEW CONNECTION] {addr} connected.")

    connected = True
    while connected:
        msgLength = conn.recv(HEADER).decode(FORMAT)
        if msgLength:
            msgLength = int(msgLength)
            msg = conn.recv(msgLength).decode(FORMAT)

            if msg == DISCONNECT_MESSAGE:
                break
            if utils.getName(int(msg[0]), int(msg[1:5])) == False:
                str = "Invalid ID or Password\n"
                conn.send(str.encode(FORMAT))
                continue
            name = utils.getName(int(msg[0]), int(msg[1:5]))

            str = f"Welcome {name}!\n"
            str += "1. Check Balance\n"
            str += "2. Deposit\n"
            str += "3. Withdraw\n"
            str += "4. Exit\n"
            conn.send(str.encode(FORMAT))

        msgLength = conn.recv(HEADER).decode(FORMAT)
        if msgLength:
            msgLength = int(msgLength)
            msg = conn.recv(msgLength).decode(FORMAT)

            if msg == DISCONNECT_MESSAGE:
                break

        total_transactions += 1 # Increment total transactions count

        if msg[5] == "1":
            str = f"Your balance is {utils.getBalance(int(msg[0])), int(msg[1:5])}\n"
            str += f"Total transactions: {total_transactions}\n"
            str += f"Success rate: {successful_transactions/total_transactions}\n"
            str += f"Error rate: {(total_transactions-successful_transactions)/total_transactions}\n"
            conn.send(str.encode(FORMAT))

        elif msg[5] == "2":
            rand = random.randint(0, 10)
            str = "Enter amount to deposit: "

            conn.send(str.encode(FORMAT))
            msgLength = conn.recv(HEADER).decode(FORMAT)
            if msgLength:
                msgLength = int(msgLength)
                msg = conn.recv(msgLength).decode(FORMAT)

                if msg == DISCONNECT_MESSAGE:
                    break
                if rand > 5:
                    utils.deposit(int(msg[0]), int(msg[1:5]), int(msg[5:10]))
                    successful_transactions += 1 # Increment successful transactions
                    str = f"Your balance is {utils.getBalance(int(msg[0])), int(msg[1:5])}\n"
                    str += f"Successful transactions: {successful_transactions}\n"
                    str += f"Total transactions: {total_transactions}\n"
                    str += f"Success rate: {successful_transactions/total_transactions}\n"
                    str += f"Error rate: {(total_transactions-successful_transactions)/total_transactions}\n"
                    conn.send(str.encode(FORMAT))
                else:
                    str = "Transaction failed\n"
                    str += f"Your balance is {utils.getBalance(int(msg[0])), int(msg[1:5])}\n"
                    str += "Please try again\n"
                    str += f"Total transactions: {total_transactions}\n"
                    str += f"Success rate: {successful_transactions/total_transactions}\n"
                    str += f"Error rate: {(total_transactions-successful_transactions)/total_transactions}\n"
                    conn.send(str.encode(FORMAT))

        elif msg[5] == "3":
            str = "Enter amount to withdraw: "
            rand = random.randint(0, 10)

            conn.send(str.encode(FORMAT))
            msgLength = conn.recv(HEADER).decode(FORMAT)
            if msgLength:
                msgLength = int(msgLength)
                msg = conn.recv(msgLength).decode(FORMAT)

                if msg == DISCONNECT_MESSAGE:
                    break
                if rand > 5:
                    utils.withdraw(int(msg[0]), int(msg[1:5]), int(msg[6:10]))
                    successful_transactions += 1 # Increment successful transactions
                    str = f"Your balance is {utils.getBalance(int(msg[0]))}\n"
                    str += f"Successful transactions: {successful_transactions}\n"
                    str += f"Total transactions: {total_transactions}\n"
                    str += f"Success rate: {successful_transactions/total_transactions}\n"
                    str += f"Error rate: {(total_transactions-successful_transactions)/total_transactions}\n"
                    conn.send(str.encode(FORMAT))
                else:
                    str = "Transaction failed\n"
                    str += f"Your balance is {utils.getBalance(int(msg[0]))}\n"
                    str += "Please try again\n"
                    str += f"Total transactions: {total_transactions}\n"
                    str += f"Success rate: {successful_transactions/total_transactions}\n"
                    str += f"Error rate: {(total_transactions-successful_transactions)/total_transactions}\n"
                    conn.send(str.encode(FORMAT))

        elif msg[5] == "4":
            break

    conn.close()

def start():
    server.listen()
    print(f"[LISTENING] Server is listening on {SERVER}")
    while True:
        conn, addr = server.accept()
        thread = threading.Thread(target=handleClient, args=(conn, addr))
        thread.start()
        print(f"[ACTIVE CONNECTIONS] {threading.activeCount() - 1}")

start()
